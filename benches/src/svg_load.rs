//! A hand-written SVG plot of latency against offered load (issue 13 §3): offered msgs/s on
//! a linear x axis, latency in µs on a log y axis (decades), one polyline per series
//! (e.g. each server's p50 and p99). The percentile plot is `svg`.

use std::fmt::Write as _;

use crate::svg::{BOTTOM, H, LEFT, RIGHT, TOP, W, escape};

/// One curve: a label and (offered msgs/s, latency µs) points, offered ascending.
pub struct Curve<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Dashed (a second statistic of the same server).
    pub dashed: bool,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 2] = ["#1f77b4", "#d62728"];

/// Renders the plot; curves `2k` and `2k + 1` share a colour (one server, two statistics).
pub fn render(title: &str, curves: &[Curve<'_>]) -> String {
    let finite = |v: f64| v.is_finite() && v > 0.0;
    let points = curves.iter().flat_map(|c| c.points.iter().copied());
    let (xmax, ymax, ymin) = points
        .filter(|&(x, y)| finite(x) && finite(y))
        .fold((1.0_f64, 10.0_f64, f64::MAX), |(a, b, c), (x, y)| {
            (a.max(x), b.max(y), c.min(y))
        });
    let (lo, hi) = (
        ymin.min(ymax).max(1.0).log10().floor(),
        ymax.log10().ceil().max(1.0),
    );
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let xmax = xmax * 1.05;
    let x_of = |v: f64| LEFT + v / xmax * (W - LEFT - RIGHT);
    let y_of = |us: f64| {
        let d = (us.max(1e-3).log10() - lo) / (hi - lo);
        H - BOTTOM - d.clamp(0.0, 1.0) * (H - BOTTOM - TOP)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
        W / 2.0,
        escape(title)
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let _ = writeln!(
        s,
        "<path d=\"M{x0} {y1} L{x0} {y0} L{x1} {y0}\" stroke=\"black\" fill=\"none\"/>"
    );
    for i in 0..=5 {
        let v = xmax / 1.05 * f64::from(i) / 5.0;
        let x = x_of(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y0 + 16.0,
            human(v)
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let us = 10f64.powf(decade);
        let y = y_of(us);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            human(us)
        );
        decade += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered msgs/s</text><text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">latency (µs, log)</text>",
        W / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0
    );
    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[(i / 2) % COLORS.len()];
        let dash = if curve.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let pts: Vec<String> = curve
            .points
            .iter()
            .filter(|&&(x, y)| finite(x) && finite(y))
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            pts.join(" "),
            LEFT + 10.0,
            TOP + 16.0 * (i as f64 + 1.0),
            escape(curve.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_plot() {
        let curves = [
            Curve {
                label: "cloudsocket p99",
                dashed: false,
                points: vec![(20_000.0, 300.0), (200_000.0, 900.0), (1e6, f64::NAN)],
            },
            Curve {
                label: "cloudsocket p50",
                dashed: true,
                points: vec![(20_000.0, 80.0)],
            },
            Curve {
                label: "peer <p99>",
                dashed: false,
                points: vec![],
            },
        ];
        let svg = render("relay & latency", &curves);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("peer &lt;p99&gt;") && svg.contains("relay &amp; latency"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(human(200_000.0), "200k");
        assert_eq!(human(1.5e6), "1.5M");
    }
}
