//! The load generator's pictures: latency distributions as SVG, drawn by
//! `plotters` (SVG backend only: no fonts or system libraries needed).

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

const COLOURS: [RGBColor; 5] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Milliseconds as a short axis label: "0.5", "3", "250".
fn ms_label(x: &f64) -> String {
    if *x >= 1.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Draws, for each named series of latencies (ms), the share of samples at
/// or below each latency (an empirical CDF) on a logarithmic time axis.
/// A series keeps its position's colour even when an earlier one is empty,
/// so the same list of series colours the same way in every plot; empty
/// series are not drawn.
pub fn latency_cdf(path: &Path, title: &str, series: &[(&str, &[f64])]) -> anyhow::Result<()> {
    let sorted: Vec<(usize, &str, Vec<f64>)> = series
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| !v.is_empty())
        .map(|(k, (name, v))| {
            let mut s: Vec<f64> = v.iter().map(|x| x.max(0.01)).collect();
            s.sort_by(f64::total_cmp);
            (k, *name, s)
        })
        .collect();
    let lo = sorted
        .iter()
        .filter_map(|(_, _, s)| s.first())
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = sorted
        .iter()
        .filter_map(|(_, _, s)| s.last())
        .copied()
        .fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo * 0.8, hi * 1.25)
    } else {
        (0.1, 100.0)
    };
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .x_labels(8)
            .x_label_formatter(&ms_label)
            .light_line_style(RGBColor(242, 242, 242))
            .y_desc("share of panics")
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .draw()?;
        for (k, name, s) in &sorted {
            let colour = COLOURS[k % COLOURS.len()];
            let n = s.len() as f64;
            chart
                .draw_series(LineSeries::new(
                    s.iter().enumerate().map(|(i, &x)| (x, (i + 1) as f64 / n)),
                    colour.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{COLOURS, RGBColor, latency_cdf};

    #[test]
    fn draws_one_line_per_non_empty_series_with_its_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdf.svg");
        let a: Vec<f64> = (1..=100).map(f64::from).collect();
        let b: Vec<f64> = (1..=50).map(|x| f64::from(x) * 3.0).collect();
        latency_cdf(
            &path,
            "test",
            &[("alpha", &a), ("beta", &b), ("empty", &[])],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("alpha") && svg.contains("beta"));
        assert!(!svg.contains("empty"));
        // Series are coloured by position: the first two colours draw a
        // line and a legend mark each, the empty third series nothing.
        let uses = |c: RGBColor| {
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            svg.matches(&format!("stroke=\"{hex}\"")).count()
        };
        assert_eq!(uses(COLOURS[0]), 2, "{svg}");
        assert_eq!(uses(COLOURS[1]), 2);
        assert_eq!(uses(COLOURS[2]), 0);
    }
}
