// Command tollgate-agent runs next to the tollgate proxy on every edge host: it tails the
// proxy's JSON-lines access log and ships it in batches to the log collector, where
// tools/report.py and tools/billing.py read it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const (
	// defaultLogPath is where the proxy writes its access log (access_log in tollgate.toml).
	defaultLogPath = "/var/log/tollgate/access.jsonl"

	// defaultCollector receives the batches.
	defaultCollector = "https://logs.internal:9443/v2/ingest/tollgate"

	// pollInterval is how often the agent looks for new lines once it has reached the end.
	pollInterval = 750 * time.Millisecond

	// maxLineBytes is the longest log line kept; longer lines are counted and dropped.
	maxLineBytes = 16 * 1024

	// stateFile remembers the offset shipped so far, so a restart does not ship twice.
	stateFile = "/var/lib/tollgate-agent/offset"
)

type options struct {
	logPath   string
	collector string
	host      string
	dryRun    bool
}

func parseFlags() options {
	host, _ := os.Hostname()
	var o options
	flag.StringVar(&o.logPath, "log", defaultLogPath, "access log to tail")
	flag.StringVar(&o.collector, "collector", defaultCollector, "collector URL")
	flag.StringVar(&o.host, "host", host, "host name sent with every batch")
	flag.BoolVar(&o.dryRun, "dry-run", false, "print batch sizes instead of sending")
	flag.Parse()
	return o
}

// readOffset returns the offset saved by saveOffset, or 0 when there is none.
func readOffset() int64 {
	b, err := os.ReadFile(stateFile)
	if err != nil {
		return 0
	}
	var off int64
	if _, err := fmt.Sscanf(string(b), "%d", &off); err != nil {
		return 0
	}
	return off
}

func saveOffset(off int64) error {
	tmp := stateFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", off)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, stateFile)
}

// tail sends every complete line of path from offset on to lines, until ctx ends. A file
// smaller than the offset was rotated: it starts again from 0.
func tail(ctx context.Context, path string, offset int64, lines chan<- logLine) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() < offset {
		log.Printf("%s shrank below offset %d: rotated, starting over", path, offset)
		offset = 0
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, maxLineBytes)
	for {
		text, err := r.ReadSlice('\n')
		switch {
		case err == nil:
			offset += int64(len(text))
			if len(text) < maxLineBytes {
				lines <- logLine{text: string(text[:len(text)-1]), end: offset}
			}
		case err == bufio.ErrBufferFull:
			offset += int64(len(text))
		case err == io.EOF:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pollInterval):
			}
		default:
			return err
		}
	}
}

func main() {
	o := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	lines := make(chan logLine, batchSize)
	s := newShipper(o.collector, o.host, o.dryRun)
	go func() {
		if err := tail(ctx, o.logPath, readOffset(), lines); err != nil {
			log.Printf("tail %s: %v", o.logPath, err)
			stop()
		}
		close(lines)
	}()
	for end := range s.run(ctx, lines) {
		if err := saveOffset(end); err != nil {
			log.Printf("saving offset %d: %v", end, err)
		}
	}
	log.Printf("shipped %d lines in %d batches", s.shippedLines, s.shippedBatches)
}
