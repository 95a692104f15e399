//! `--svg FILE`: bench results drawn as SVG charts (plotters' SVG backend;
//! the viewer renders the text, so no fonts are needed here).
//!
//! ```text
//!  bench cluster ─▶ ops/s per configuration (bars)
//!                   latency p50 / p99 / p99.9 per configuration (log scale)
//!  bench memory  ─▶ RSS and data on disk against entries applied
//! ```

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::cluster::ClusterRow;
use super::memory::MemorySample;
use super::output::thousands;
use crate::Failure;

const WIDTH: u32 = 1100;

/// A named, coloured series: how to read its value from a row.
type Series<T> = (&'static str, RGBColor, fn(&T) -> f64);
const PANEL_HEIGHT: u32 = 420;

fn chart_error(path: &Path, e: impl std::fmt::Display) -> Failure {
    super::failure(format_args!("drawing {}: {e}", path.display()))
}

/// The x-axis name of each row: what differs between the rows.
fn labels(rows: &[ClusterRow]) -> Vec<String> {
    let varies = |f: &dyn Fn(&ClusterRow) -> usize| rows.iter().any(|r| f(r) != f(&rows[0]));
    let (nodes, values) = (varies(&|r| r.nodes), varies(&|r| r.value_size));
    rows.iter()
        .map(|r| {
            let mut s = format!("{} C={}", r.mode, r.clients);
            if nodes {
                s.push_str(&format!(" n={}", r.nodes));
            }
            if values {
                s.push_str(&format!(" {}B", r.value_size));
            }
            s
        })
        .collect()
}

/// Draws throughput and latency percentiles of `rows`, one x position per
/// row in the order given.
pub(crate) fn cluster(rows: &[ClusterRow], path: &Path) -> Result<(), Failure> {
    if rows.is_empty() {
        return Err(super::failure("--svg: no run to draw"));
    }
    let err = |e: &dyn std::fmt::Display| chart_error(path, e);
    let names = labels(rows);
    // A segmented 0..=last range has one slot per row.
    let n = rows.len() as u32;
    let rotate = n > 6;
    let label_area = if rotate { 150 } else { 40 };
    let root = SVGBackend::new(path, (WIDTH, 2 * PANEL_HEIGHT + label_area)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(PANEL_HEIGHT);
    let name_of = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let x_style = if rotate {
        ("sans-serif", 12)
            .into_font()
            .transform(FontTransform::Rotate90)
    } else {
        ("sans-serif", 12).into_font()
    };

    let top_ops = rows.iter().map(|r| r.ops_per_sec).fold(0.0, f64::max);
    let mut ops = ChartBuilder::on(&top)
        .caption("throughput (ops/s)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..(top_ops * 1.1).max(1.0))
        .map_err(|e| err(&e))?;
    ops.configure_mesh()
        .disable_x_mesh()
        // (plotters loops forever on x_labels(0): names are drawn below instead)
        .x_labels(n as usize)
        .x_label_formatter(&|_| String::new())
        .y_desc("ops/s")
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .map_err(|e| err(&e))?;
    ops.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let i = i as u32;
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), r.ops_per_sec),
            ],
            BLUE.mix(0.55).filled(),
        );
        bar.set_margin(0, 0, 6, 6);
        bar
    }))
    .map_err(|e| err(&e))?;

    let percentiles: [Series<ClusterRow>; 3] = [
        ("p50", GREEN, |r| r.p50_us),
        ("p99", BLUE, |r| r.p99_us),
        ("p99.9", RED, |r| r.p999_us),
    ];
    let top_us = rows.iter().map(|r| r.p999_us).fold(1.0, f64::max);
    let low_us = rows
        .iter()
        .map(|r| r.p50_us)
        .filter(|v| *v > 0.0)
        .fold(top_us, f64::min);
    let mut lat = ChartBuilder::on(&bottom)
        .caption("latency (µs, log scale)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(label_area)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0..n - 1).into_segmented(),
            ((low_us / 2.0).max(0.5)..top_us * 2.0).log_scale(),
        )
        .map_err(|e| err(&e))?;
    lat.configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&name_of)
        .x_label_style(x_style)
        .y_desc("µs")
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .map_err(|e| err(&e))?;
    for (name, color, value) in percentiles {
        let points = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| value(r) > 0.0)
            .map(|(i, r)| (SegmentValue::CenterOf(i as u32), value(r)));
        lat.draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(3))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    lat.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Draws the process's RSS and the data directory's size against the
/// entries applied.
pub(crate) fn memory(samples: &[MemorySample], path: &Path) -> Result<(), Failure> {
    if samples.is_empty() {
        return Err(super::failure("--svg: no sample to draw"));
    }
    let err = |e: &dyn std::fmt::Display| chart_error(path, e);
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT + 60)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let last = samples.iter().map(|s| s.applied).max().unwrap_or(0).max(1) as f64 / 1e6;
    let top = samples
        .iter()
        .map(|s| s.rss_mib.max(s.disk_mib))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "memory and disk while entries are applied",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..last, 0.0..top * 1.15)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("entries applied (millions)")
        .y_desc("MiB")
        .draw()
        .map_err(|e| err(&e))?;
    let lines: [Series<MemorySample>; 2] = [
        ("RSS of the process (every server)", BLUE, |s| s.rss_mib),
        ("data directory on disk", RED, |s| s.disk_mib),
    ];
    for (name, color, value) in lines {
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.applied as f64 / 1e6, value(s))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
