//! Latency-percentile plot as a small hand-written SVG (no plotting dependency).
//!
//! x: percentile on a "nines" scale (50, 90, 99, 99.9, ...), y: latency in ms, log scale;
//! one line per series.

use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
/// Rightmost x: p99.9999.
const NINES_MAX: f64 = 6.0;

/// One curve: `(percentile 0..=100, latency_us)` points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, u64)],
}

pub fn percentile_svg(title: &str, series: &[Series<'_>]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let max_us = all.clone().map(|p| p.1).max().unwrap_or(1).max(1);
    let min_us = all.map(|p| p.1).min().unwrap_or(1).max(1);
    let y_lo = (min_us as f64).log10().floor();
    let y_hi = ((max_us as f64).log10().ceil()).max(y_lo + 1.0);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |percentile: f64| {
        let nines = -(1.0 - (percentile / 100.0).min(1.0 - 1e-6)).log10();
        MARGIN_LEFT + plot_w * (nines / NINES_MAX).clamp(0.0, 1.0)
    };
    let y = |us: u64| {
        let v = (us.max(1) as f64).log10();
        MARGIN_TOP + plot_h * (1.0 - (v - y_lo) / (y_hi - y_lo))
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (nines, label) in [
        (0.0, "0"),
        (1.0, "90"),
        (2.0, "99"),
        (3.0, "99.9"),
        (4.0, "99.99"),
        (5.0, "99.999"),
        (6.0, "99.9999"),
    ] {
        let px = MARGIN_LEFT + plot_w * nines / NINES_MAX;
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{MARGIN_TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0
        );
    }
    let mut decade = y_lo;
    while decade <= y_hi {
        let us = 10f64.powf(decade) as u64;
        let py = y(us);
        let label = if us >= 1000 {
            format!("{} ms", us / 1000)
        } else {
            format!("{us} us")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            py + 4.0
        );
        decade += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 12.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(p, us)| format!("{:.1},{:.1}", x(p), y(us)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = MARGIN_TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            MARGIN_LEFT + 12.0,
            ly - 4.0,
            MARGIN_LEFT + 32.0,
            ly + 1.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series() {
        let a = [(0.0, 100u64), (50.0, 200), (99.0, 5_000), (100.0, 20_000)];
        let b = [(0.0, 300u64), (100.0, 900)];
        let svg = percentile_svg(
            "t <1>",
            &[
                Series {
                    name: "produce",
                    points: &a,
                },
                Series {
                    name: "e2e",
                    points: &b,
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(!svg.contains("NaN"));
    }
}
