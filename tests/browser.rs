//! The HTML report (`comparative_analysis/report.html`, src/report/html.rs), checked two ways:
//!
//! - `structure`: without a browser — the page is self-contained (no external script, style,
//!   image or font; nothing fetched but `progress.js` next to it), every chart is well-formed
//!   SVG (parsed with roxmltree) with its axes' labels, and the embedded JSON is the JSON report.
//! - `renders_in_chromium`: a real browser (Debian's Chromium, headless; `O3_CHROMIUM`, else
//!   `chromium` on the PATH — `harness/setup-browser.sh` installs it) loads the page from disk,
//!   the page's own check records on `<body>` how many charts rendered with drawn content, and
//!   every one must have; a screenshot is saved next to the report as `report.png`.
//!
//! The report is built from `O3_BROWSER_RUN_DIR` when set (harness/test.sh points it at the
//! run the suite just made, so the real report is rendered), else from the report fixtures
//! (`tests/fixtures/report/cells/`). Without a browser the browser test is ignored, or fails when
//! `O3_REQUIRE_BROWSER=1` (as in CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

use libtest_mimic::{Arguments, Failed, Trial};
use o3_suite::report;
use o3_suite::rundir::RunDir;

fn main() {
    let args = Arguments::from_args();
    let browser = find_browser();
    let required = env::var("O3_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let mut trials = vec![Trial::test("structure", || {
        structure().map_err(Failed::from)
    })];
    let renders = match browser {
        Some(b) => Trial::test("renders_in_chromium", move || {
            renders(&b).map_err(Failed::from)
        }),
        None if required => Trial::test("renders_in_chromium", || {
            Err(Failed::from(
                "O3_REQUIRE_BROWSER=1 but no browser: set O3_CHROMIUM or run \
                 harness/setup-browser.sh",
            ))
        }),
        None => Trial::test("renders_in_chromium", || Ok(())).with_ignored_flag(true),
    };
    trials.push(renders);
    libtest_mimic::run(&args, trials).exit();
}

fn find_browser() -> Option<PathBuf> {
    if let Some(p) = env::var_os("O3_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| env::split_paths(&path).map(move |d| d.join(b)))
        .find(|p| p.is_file())
}

/// The run whose report is checked, with its report rebuilt.
fn run_dir(tag: &str) -> Result<RunDir, String> {
    let run = match env::var_os("O3_BROWSER_RUN_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => RunDir::at(PathBuf::from(dir)),
        None => {
            let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("browser")
                .join(tag);
            let _ = fs::remove_dir_all(&root);
            let run = RunDir::at(root);
            let fixtures =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/cells");
            for entry in
                fs::read_dir(&fixtures).map_err(|e| format!("{}: {e}", fixtures.display()))?
            {
                let path = entry.map_err(|e| e.to_string())?.path();
                let dest = run
                    .root()
                    .join("cells")
                    .join(path.file_name().expect("a file"));
                fs::create_dir_all(dest.parent().expect("cells/")).map_err(|e| e.to_string())?;
                fs::copy(&path, &dest).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            run
        }
    };
    report::build(&run).map_err(|e| e.to_string())?;
    Ok(run)
}

fn html_of(run: &RunDir) -> Result<(PathBuf, String), String> {
    let path = run.report_path(report::html::FILE_NAME);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, text))
}

/// The `<svg>…</svg>` elements of the page.
fn svgs(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let Some(len) = rest[start..].find("</svg>") else {
            break;
        };
        let end = start + len + "</svg>".len();
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

fn structure() -> Result<(), String> {
    let run = run_dir("structure")?;
    let (path, html) = html_of(&run)?;
    let at = |what: &str| format!("{}: {what}", path.display());
    if !html.starts_with("<!DOCTYPE html>") || !html.trim_end().ends_with("</html>") {
        return Err(at("not a complete HTML document"));
    }
    // Self-contained: nothing loaded from elsewhere but progress.js beside the page.
    for needle in [
        "<link",
        "@import",
        "src=\"http",
        "href=\"http",
        "url(http",
        "<img",
        "<iframe",
    ] {
        if html.contains(needle) {
            return Err(at(&format!("loads an external resource ({needle})")));
        }
    }
    let scripts_with_src: Vec<&str> = html
        .match_indices("<script src=")
        .map(|(i, _)| &html[i..])
        .collect();
    if scripts_with_src.len() != 1
        || !scripts_with_src[0].starts_with("<script src=\"progress.js\">")
    {
        return Err(at("the only script loaded must be progress.js"));
    }
    let figures = html.matches("<figure class=\"chart\"").count();
    let svgs = svgs(&html);
    let cells = run.read_cells().map_err(|e| e.to_string())?;
    let models: std::collections::BTreeSet<&str> = cells
        .iter()
        .filter(|c| !report::is_probe(&c.cell.test_name))
        .map(|c| c.cell.model.as_str())
        .collect();
    if figures < 3 * models.len() {
        return Err(at(&format!(
            "{figures} charts for {} models: expected TTFT, decode and RAM charts per model",
            models.len()
        )));
    }
    if svgs.len() != figures {
        return Err(at(&format!(
            "{figures} chart figures but {} <svg> elements",
            svgs.len()
        )));
    }
    for (i, svg) in svgs.iter().enumerate() {
        let doc = roxmltree::Document::parse(svg)
            .map_err(|e| at(&format!("chart {i}: not well-formed SVG: {e}")))?;
        let root = doc.root_element();
        if root.tag_name().name() != "svg" {
            return Err(at(&format!(
                "chart {i}: root is <{}>",
                root.tag_name().name()
            )));
        }
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        let drawn = doc
            .descendants()
            .filter(|n| {
                n.has_tag_name("polyline") || n.has_tag_name("circle") || n.has_tag_name("line")
            })
            .count();
        if drawn < 3 || texts.len() < 4 {
            return Err(at(&format!(
                "chart {i}: {drawn} drawn elements, {} texts",
                texts.len()
            )));
        }
        // Units on the axes.
        if !texts
            .iter()
            .any(|t| t.contains("(tokens") || t.contains("(s)"))
        {
            return Err(at(&format!(
                "chart {i}: no axis label with a unit: {texts:?}"
            )));
        }
    }
    // The JSON report is embedded and equal to performance_matrix.json.
    let marker = "<script type=\"application/json\" id=\"o3-report\">";
    let start = html
        .find(marker)
        .ok_or_else(|| at("no embedded JSON report"))?
        + marker.len();
    let len = html[start..]
        .find("</script>")
        .ok_or_else(|| at("unterminated JSON"))?;
    let embedded: serde_json::Value = serde_json::from_str(&html[start..start + len])
        .map_err(|e| at(&format!("embedded JSON: {e}")))?;
    let file: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(run.report_path("performance_matrix.json"))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if embedded != file {
        return Err(at("embedded JSON differs from performance_matrix.json"));
    }
    Ok(())
}

/// Kills the browser when dropped (timeout, panic).
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the browser with `args` on `url`; returns its stdout. Fails after `timeout`.
fn chromium(
    browser: &Path,
    profile: &Path,
    args: &[String],
    url: &str,
    timeout: Duration,
) -> Result<String, String> {
    let out_path = profile.join("stdout.txt");
    let err_path = profile.join("stderr.txt");
    let child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).map_err(|e| e.to_string())?)
        .stderr(fs::File::create(&err_path).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{}: {e}", browser.display()))?;
    let mut child = Browser(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{} did not finish within {timeout:?}; stderr:\n{}",
                browser.display(),
                fs::read_to_string(&err_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!(
            "{} exited with {status}; stderr:\n{}",
            browser.display(),
            fs::read_to_string(&err_path).unwrap_or_default()
        ));
    }
    fs::read_to_string(&out_path).map_err(|e| e.to_string())
}

fn renders(browser: &Path) -> Result<(), String> {
    let run = run_dir("browser")?;
    let (path, html) = html_of(&run)?;
    let figures = html.matches("<figure class=\"chart\"").count();
    let path = path.canonicalize().map_err(|e| e.to_string())?;
    let url = format!("file://{}", path.display());
    let scratch =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(120);

    let dom = chromium(
        browser,
        &scratch,
        &["--dump-dom".to_string()],
        &url,
        timeout,
    )?;
    let attr = |name: &str| {
        let key = format!("{name}=\"");
        dom.find(&key).map(|i| {
            let rest = &dom[i + key.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
    };
    let rendered = attr("data-charts")
        .ok_or("the page's chart check did not run (no data-charts on <body>)")?;
    let expected = format!("{figures}/{figures}");
    // A run with cells has charts (the structure test counts them per model).
    let has_cells = run
        .read_cells()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|c| !report::is_probe(&c.cell.test_name));
    if rendered != expected || (figures == 0 && has_cells) {
        return Err(format!(
            "{rendered} charts rendered, expected {expected}; not rendered: {}",
            attr("data-charts-failed").unwrap_or_default()
        ));
    }

    let png = run.report_path("report.png");
    let height = (900 + 420 * figures.div_ceil(2)).min(16_000);
    chromium(
        browser,
        &scratch,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size=1280,{height}"),
        ],
        &url,
        timeout,
    )?;
    let bytes = fs::read(&png).map_err(|e| format!("{}: {e}", png.display()))?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.len() < 10_000 {
        return Err(format!(
            "{}: not a screenshot ({} bytes)",
            png.display(),
            bytes.len()
        ));
    }
    eprintln!(
        "[browser] {rendered} charts rendered; screenshot {}",
        png.display()
    );
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}
