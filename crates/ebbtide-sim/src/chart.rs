//! The run drawn as an SVG: queue depth, fleet size and cumulative cost over
//! time, one line per policy, plus the first policy's fleet by state.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{RunReport, Sample};

/// Drawing failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct ChartError {
    /// The output file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// At most `max` points: the maximum of each bucket (peaks stay visible).
fn downsample(samples: &[Sample], max: usize, f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    let step = samples.len().div_ceil(max.max(1)).max(1);
    samples
        .chunks(step)
        .map(|c| {
            (
                c[0].t_s as f64 / 3600.0,
                c.iter().map(&f).fold(f64::MIN, f64::max),
            )
        })
        .collect()
}

/// Writes the chart.
pub fn draw(reports: &[RunReport], path: &Path) -> Result<(), ChartError> {
    let shown = path.display().to_string();
    let fail = |e: &dyn std::fmt::Display| ChartError {
        path: shown.clone(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1400, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((4, 1));
    let hours = reports
        .iter()
        .flat_map(|r| r.timeline.last())
        .map(|s| s.t_s as f64 / 3600.0)
        .fold(1.0, f64::max);
    type Getter = fn(&Sample) -> f64;
    let series: [(&str, Getter); 3] = [
        ("queued jobs", |s| s.queued as f64),
        ("instances (all states)", |s| {
            (s.booting + s.idle + s.busy + s.retiring) as f64
        }),
        ("cumulative cost, $", |s| {
            ebbtide_core::Micros(s.cost_micros).as_dollars()
        }),
    ];
    for (panel, (title, get)) in panels.iter().zip(series) {
        let lines: Vec<Vec<(f64, f64)>> = reports
            .iter()
            .map(|r| downsample(&r.timeline, 1500, get))
            .collect();
        let top = lines.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..hours, 0.0..top)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("hours")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (r, pts)) in reports.iter().zip(lines).enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(1)))
                .map_err(|e| fail(&e))?
                .label(r.policy.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    if let Some(first) = reports.first() {
        let states: [(&str, Getter); 3] = [
            ("busy", |s| s.busy as f64),
            ("idle", |s| s.idle as f64),
            ("booting", |s| s.booting as f64),
        ];
        let lines: Vec<Vec<(f64, f64)>> = states
            .iter()
            .map(|(_, g)| downsample(&first.timeline, 1500, g))
            .collect();
        let top = lines.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&panels[3])
            .caption(
                format!("{}: instances by state", first.policy),
                ("sans-serif", 18),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..hours, 0.0..top)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("hours")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, ((name, _), pts)) in states.iter().zip(lines).enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(1)))
                .map_err(|e| fail(&e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

/// One family's settings on a frontier chart.
pub struct FrontierSeries<'a> {
    /// Family name (the legend).
    pub family: &'a str,
    /// Its runs, any order.
    pub runs: &'a [RunReport],
}

/// Draws cost against `class`'s p95 wait: each family's settings as
/// points joined along its frontier (filled where they reach `goal` in
/// every class, hollow where not), Ebbtide as a cross, and a dashed line at
/// the class's target.
pub fn frontier(
    title: &str,
    class: &str,
    target_s: f64,
    goal: f64,
    ebbtide: &RunReport,
    families: &[FrontierSeries<'_>],
    path: &Path,
) -> Result<(), ChartError> {
    let shown = path.display().to_string();
    let fail = |e: &dyn std::fmt::Display| ChartError {
        path: shown.clone(),
        message: e.to_string(),
    };
    let dollars = |r: &RunReport| ebbtide_core::Micros(r.cost_micros).as_dollars();
    let all = families
        .iter()
        .flat_map(|f| f.runs.iter())
        .chain(std::iter::once(ebbtide));
    let (mut top_cost, mut top_wait) = (1.0f64, target_s * 1.5);
    for r in all {
        top_cost = top_cost.max(dollars(r));
        let w = crate::sweep::p95(r, class);
        if w.is_finite() {
            top_wait = top_wait.max(w);
        }
    }
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..top_cost * 1.05, 0.0..top_wait * 1.05)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("cost of the month, $")
        .y_desc(format!("{class}-class p95 wait, s"))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, target_s), (top_cost * 1.05, target_s)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?
        .label(format!("{class} target {target_s:.0} s"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
    for (i, f) in families.iter().enumerate() {
        let color = COLORS[(i + 1) % COLORS.len()];
        let line: Vec<(f64, f64)> = crate::sweep::frontier(f.runs, class)
            .iter()
            .map(|r| (dollars(r), crate::sweep::p95(r, class)))
            .collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(format!("{} frontier", f.family))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(f.runs.iter().map(|r| {
                let style = if r.min_attainment() >= goal {
                    color.filled()
                } else {
                    color.stroke_width(1)
                };
                Circle::new((dollars(r), crate::sweep::p95(r, class)), 4, style)
            }))
            .map_err(|e| fail(&e))?;
    }
    let me = (dollars(ebbtide), crate::sweep::p95(ebbtide, class));
    chart
        .draw_series(std::iter::once(Cross::new(
            me,
            9,
            COLORS[0].stroke_width(3),
        )))
        .map_err(|e| fail(&e))?
        .label(format!(
            "ebbtide ({:.2} % worst class)",
            ebbtide.min_attainment() * 100.0
        ))
        .legend(|(x, y)| Cross::new((x + 8, y), 6, COLORS[0].stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
