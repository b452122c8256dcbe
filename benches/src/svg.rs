//! A hand-written SVG latency plot: latency (µs, linear) against percentile on a log axis
//! (x = −log10(1 − p), ticks 90 %, 99 %, 99.9 % …), one polyline per series.

use std::fmt::Write as _;

/// One curve: a label and (percentile 0..100, latency µs) points.
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Points, percentile ascending.
    pub points: Vec<(f64, f64)>,
}

// The plot frame, shared with `svg_load`.
pub(crate) const W: f64 = 720.0;
pub(crate) const H: f64 = 420.0;
pub(crate) const LEFT: f64 = 70.0;
pub(crate) const BOTTOM: f64 = 50.0;
pub(crate) const TOP: f64 = 30.0;
pub(crate) const RIGHT: f64 = 20.0;
const NINES: f64 = 6.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn x_of(pct: f64) -> f64 {
    let tail = (1.0 - pct / 100.0).max(10f64.powf(-NINES));
    let nines = (-tail.log10()).clamp(0.0, NINES);
    LEFT + nines / NINES * (W - LEFT - RIGHT)
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the plot.
pub fn render(title: &str, series: &[Series<'_>]) -> String {
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let y_of = |us: f64| H - BOTTOM - us / ymax * (H - BOTTOM - TOP);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let _ = writeln!(
        s,
        "<path d=\"M{x0} {y1} L{x0} {y0} L{x1} {y0}\" stroke=\"black\" fill=\"none\"/>"
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + i as f64 / NINES * (W - LEFT - RIGHT);
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            y0 + 16.0
        );
    }
    for i in 0..=5 {
        let us = ymax * i as f64 / 5.0;
        let y = y_of(us);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{us:.0}</text>",
            x0 - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text><text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">latency (µs)</text>",
        W / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0
    );
    for (i, series) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = series
            .points
            .iter()
            .map(|(p, us)| format!("{:.1},{:.1}", x_of(*p), y_of(*us)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            pts.join(" "),
            LEFT + 10.0,
            TOP + 16.0 * (i as f64 + 1.0),
            escape(series.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_plot() {
        let series = [
            Series {
                label: "a<b",
                points: vec![(0.0, 10.0), (90.0, 20.0), (99.9, 80.0), (100.0, 90.0)],
            },
            Series {
                label: "peer",
                points: vec![],
            },
        ];
        let svg = render("relay & more", &series);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.contains("relay &amp; more"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn log_axis_orders_the_tail() {
        assert!(x_of(0.0) < x_of(90.0) && x_of(90.0) < x_of(99.0) && x_of(99.0) < x_of(99.99));
        assert!(x_of(100.0).is_finite());
    }
}
