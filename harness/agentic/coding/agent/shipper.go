package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

const (
	// batchSize is the most lines sent in one request.
	batchSize = 384

	// flushInterval sends a partial batch when no full one has formed for this long.
	flushInterval = 7 * time.Second

	// initialBackoff is the wait after the first failed send; it doubles on each failure.
	initialBackoff = 400 * time.Millisecond

	// maxBackoff is the longest wait between two attempts.
	maxBackoff = 45 * time.Second

	// maxAttempts is how often one batch is tried before it is written to the spool.
	maxAttempts = 9

	// spoolDir keeps batches the collector did not take, for tollgate-agent --replay.
	spoolDir = "/var/spool/tollgate-agent"
)

// logLine is one access log line and the file offset just past it.
type logLine struct {
	text string
	end  int64
}

type shipper struct {
	url            string
	host           string
	dryRun         bool
	client         *http.Client
	shippedLines   int
	shippedBatches int
}

func newShipper(url, host string, dryRun bool) *shipper {
	return &shipper{url: url, host: host, dryRun: dryRun, client: &http.Client{Timeout: 20 * time.Second}}
}

// nextDelay is the wait after a failed attempt that waited prev.
func nextDelay(prev time.Duration) time.Duration {
	if prev == 0 {
		return initialBackoff
	}
	return prev * 2
}

// encode gzips the batch as JSON lines.
func encode(batch []logLine) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, l := range batch {
		if _, err := zw.Write([]byte(l.text + "\n")); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// send posts one batch, retrying with backoff; a batch that fails maxAttempts times is spooled.
func (s *shipper) send(ctx context.Context, batch []logLine) error {
	body, err := encode(batch)
	if err != nil {
		return err
	}
	if s.dryRun {
		log.Printf("dry run: batch of %d lines, %d bytes gzipped", len(batch), len(body))
		return nil
	}
	var delay time.Duration
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "gzip")
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("X-Tollgate-Host", s.host)
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("collector answered %s", resp.Status)
		}
		delay = nextDelay(delay)
		log.Printf("attempt %d/%d: %v; next in %s", attempt, maxAttempts, err, delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	return spool(spoolDir, s.host, body)
}

// run batches lines and sends them; after each batch it yields the offset shipped so far.
func (s *shipper) run(ctx context.Context, lines <-chan logLine) <-chan int64 {
	done := make(chan int64)
	go func() {
		defer close(done)
		batch := make([]logLine, 0, batchSize)
		timer := time.NewTimer(flushInterval)
		flush := func() {
			if len(batch) == 0 {
				return
			}
			if err := s.send(ctx, batch); err != nil {
				log.Printf("batch of %d lines lost: %v", len(batch), err)
			}
			s.shippedLines += len(batch)
			s.shippedBatches++
			done <- batch[len(batch)-1].end
			batch = batch[:0]
		}
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					flush()
					return
				}
				batch = append(batch, l)
				if len(batch) == batchSize {
					flush()
					timer.Reset(flushInterval)
				}
			case <-timer.C:
				flush()
				timer.Reset(flushInterval)
			}
		}
	}()
	return done
}

// spool writes a batch the collector did not take into dir, named by host and time.
func spool(dir, host string, body []byte) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	name := fmt.Sprintf("%s-%d.jsonl.gz", host, time.Now().UnixNano())
	return os.WriteFile(filepath.Join(dir, name), body, 0o640)
}
