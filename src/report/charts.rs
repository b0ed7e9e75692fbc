//! Charts of the HTML report ([`super::html`]), drawn as inline SVG with plotters' SVG backend.
//!
//! A [`Chart`] is data only — series of points with their intervals, gate limits and
//! predictions — and [`svg`] draws it: measured series as solid lines with markers and 95 %
//! error bars, limits as red dashed lines, predictions as grey dashed lines. Context axes are
//! logarithmic (base 2: the matrix doubles `num_ctx`), labelled `2K`, `4K`, … The output is a
//! pure function of the chart (no clock, no fonts read: text is left to the browser), so the
//! report's golden holds it byte for byte.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::text::ctx_label;

/// Width and height of every chart (px; the SVG scales with the page).
pub const SIZE: (u32, u32) = (560, 340);

/// One chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title, e.g. `smollm2:135m — TTFT`.
    pub title: String,
    /// What the x axis shows, with its unit.
    pub x_label: String,
    /// What the y axis shows, with its unit.
    pub y_label: String,
    /// How x values are read.
    pub x_axis: XAxis,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

/// How the x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// x is `num_ctx` in tokens, drawn on a log-2 scale with labels `2K`, `4K`, …
    Context,
    /// x is drawn as is, on a linear scale.
    Linear,
}

/// One series of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// How it is drawn.
    pub kind: SeriesKind,
    /// Its points, in x order.
    pub points: Vec<Point>,
}

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Measured values (solid line, markers, error bars where the point has an interval).
    Measured,
    /// A gate's limit (red, dashed).
    Limit,
    /// The performance model's prediction (grey, dashed, triangles).
    Predicted,
}

/// One point, with its 95 % interval when it has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// x value (for [`XAxis::Context`], `num_ctx`).
    pub x: f64,
    /// y value.
    pub y: f64,
    /// The interval of `y`.
    pub interval: Option<(f64, f64)>,
}

impl Point {
    /// A point without an interval.
    pub fn at(x: f64, y: f64) -> Point {
        Point {
            x,
            y,
            interval: None,
        }
    }
}

impl Chart {
    /// Whether the chart has any finite point to draw.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| {
            s.points
                .iter()
                .all(|p| !p.x.is_finite() || !p.y.is_finite())
        })
    }
}

/// Colours of measured series, in order (colour-blind-safe "tableau" hues).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];
const LIMIT: RGBColor = RGBColor(214, 39, 40);
const PREDICTED: RGBColor = RGBColor(110, 110, 110);

/// The chart as an SVG document (`<svg …>…</svg>`), or why it could not be drawn.
pub fn svg(chart: &Chart) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root, chart).map_err(|e| format!("chart {:?}: {e}", chart.title))?;
        root.present()
            .map_err(|e| format!("chart {:?}: {e}", chart.title))?;
    }
    Ok(out)
}

fn x_of(axis: XAxis, x: f64) -> f64 {
    match axis {
        XAxis::Context => x.max(1.0).log2(),
        XAxis::Linear => x,
    }
}

/// The drawn range of `values` (padded; a single value gets a unit around it).
fn range(values: impl Iterator<Item = f64>, pad: f64, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let unit = if hi.abs() > 0.0 { hi.abs() * 0.5 } else { 1.0 };
        return (lo - unit, hi + unit);
    }
    let (lo_pad, hi_pad) = (
        if from_zero && lo >= 0.0 {
            0.0
        } else {
            span * pad
        },
        span * pad,
    );
    (lo - lo_pad, hi + hi_pad)
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &Chart,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    let axis = chart.x_axis;
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = match axis {
        XAxis::Context => {
            let (lo, hi) = range(points().map(|p| x_of(axis, p.x)), 0.0, false);
            (lo.floor() - 0.5, hi.ceil() + 0.5)
        }
        XAxis::Linear => range(points().map(|p| p.x), 0.05, false),
    };
    let ys = points().flat_map(|p| {
        let (lo, hi) = p.interval.unwrap_or((p.y, p.y));
        [p.y, lo, hi]
    });
    let (y0, y1) = range(ys, 0.12, true);

    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let context_label = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            ctx_label(2f64.powf(v.round()) as u32)
        } else {
            String::new()
        }
    };
    let mut mesh = ctx.configure_mesh();
    mesh.x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235));
    // As many decimals as the span needs, so tick labels stay short.
    let decimals = match y1 - y0 {
        d if d >= 50.0 => 0,
        d if d >= 5.0 => 1,
        _ => 2,
    };
    let y_label = move |v: &f64| format!("{v:.decimals$}");
    mesh.y_label_formatter(&y_label);
    let x_decimals = match x1 - x0 {
        d if d >= 50.0 => 0,
        d if d >= 5.0 => 1,
        _ => 2,
    };
    let x_label = move |v: &f64| format!("{v:.x_decimals$}");
    if axis == XAxis::Linear {
        mesh.x_label_formatter(&x_label);
    }
    if axis == XAxis::Context {
        mesh.x_labels(((x1 - x0).round() as usize).max(2))
            .x_label_formatter(&context_label);
    }
    mesh.draw()?;

    let mut measured = 0;
    for series in &chart.series {
        let pts: Vec<Point> = series
            .points
            .iter()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .map(|p| Point {
                x: x_of(axis, p.x),
                ..*p
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let xy = || pts.iter().map(|p| (p.x, p.y));
        match series.kind {
            SeriesKind::Measured => {
                let color = PALETTE[measured % PALETTE.len()];
                measured += 1;
                ctx.draw_series(LineSeries::new(xy(), color.stroke_width(2)))?
                    .label(series.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                ctx.draw_series(xy().map(|p| Circle::new(p, 4, color.filled())))?;
                ctx.draw_series(pts.iter().filter_map(|p| {
                    p.interval
                        .map(|(lo, hi)| ErrorBar::new_vertical(p.x, lo, p.y, hi, color, 8))
                }))?;
            }
            SeriesKind::Limit => {
                let style = LIMIT.stroke_width(2);
                ctx.draw_series(DashedLineSeries::new(xy(), 8, 5, style))?
                    .label(series.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            SeriesKind::Predicted => {
                let style = PREDICTED.stroke_width(1);
                ctx.draw_series(DashedLineSeries::new(xy(), 4, 4, style))?
                    .label(series.label.as_str())
                    .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 4, PREDICTED.filled()));
                ctx.draw_series(xy().map(|p| TriangleMarker::new(p, 5, PREDICTED.filled())))?;
            }
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            title: "m — TTFT".into(),
            x_label: "context (tokens, log scale)".into(),
            y_label: "TTFT (s)".into(),
            x_axis: XAxis::Context,
            series,
        }
    }

    /// A measured series of two points with intervals, and a flat TTFT limit.
    fn measured_and_limit() -> Vec<Series> {
        vec![
            Series {
                label: "m".into(),
                kind: SeriesKind::Measured,
                points: vec![
                    Point {
                        x: 2048.0,
                        y: 1.0,
                        interval: Some((0.9, 1.1)),
                    },
                    Point {
                        x: 8192.0,
                        y: 3.0,
                        interval: Some((2.5, 3.5)),
                    },
                ],
            },
            Series {
                label: "TTFT gate".into(),
                kind: SeriesKind::Limit,
                points: vec![Point::at(2048.0, 5.0), Point::at(8192.0, 5.0)],
            },
        ]
    }

    #[test]
    fn draws_points_error_bars_limits_and_context_labels() {
        let svg = svg(&chart(measured_and_limit())).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in ["m — TTFT", "TTFT (s)", "2K", "4K", "8K", "TTFT gate"] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        // Two markers, and two error bars, each drawn with a dot at its mean.
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        assert!(
            svg.contains("#D62728") || svg.contains("#d62728"),
            "limit colour"
        );
        // Deterministic.
        assert_eq!(svg, super::svg(&chart(measured_and_limit())).unwrap());
    }

    #[test]
    fn empty_and_single_point_charts() {
        assert!(chart(vec![]).is_empty());
        let one = chart(vec![Series {
            label: "m".into(),
            kind: SeriesKind::Measured,
            points: vec![Point::at(4096.0, 2.0)],
        }]);
        assert!(!one.is_empty());
        let svg = svg(&one).unwrap();
        assert!(svg.contains("4K") && svg.contains("<circle"), "{svg}");
    }

    #[test]
    fn ranges_pad_and_start_at_zero() {
        assert_eq!(range([].into_iter(), 0.1, true), (0.0, 1.0));
        let (lo, hi) = range([2.0, 4.0].into_iter(), 0.1, true);
        assert_eq!(lo, 0.0);
        assert!(hi > 4.0);
        let (lo, hi) = range([3.0].into_iter(), 0.1, false);
        assert!(lo < 3.0 && hi > 3.0);
    }
}
