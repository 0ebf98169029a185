//! PNG plots of the results (plotters, bitmap backend). Text is drawn with ab_glyph from
//! a TrueType font read at run time (Debian's fonts-dejavu-core), so no fontconfig or
//! freetype library is needed.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Result, anyhow};
use plotters::{coord::Shift, prelude::*};

use super::{
    sample::{Recorder, Scenario, Variant},
    stats::Summary,
};

const FONT: &str = "sans-serif";
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Median/min/max of (scenario, metric) for each variant that has samples.
fn summaries(rec: &Recorder, scenario: Scenario, metric: &str) -> Vec<(Variant, Summary)> {
    Variant::ALL
        .into_iter()
        .filter_map(|v| {
            let vals: Vec<f64> = rec
                .samples
                .iter()
                .filter(|s| s.scenario == scenario && s.variant == v && s.metric == metric)
                .map(|s| s.value)
                .collect();
            Summary::of(&vals).map(|s| (v, s))
        })
        .collect()
}

fn color(v: Variant) -> RGBColor {
    match v {
        Variant::Ebpf => RGBColor(0x1f, 0x77, 0xb4),
        Variant::Iptables => RGBColor(0xd6, 0x27, 0x28),
        Variant::Limit => RGBColor(0x7f, 0x7f, 0x7f),
        Variant::Routed => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

fn register_font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONT_PATHS
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| "no TrueType font found for the plots; install one with `apt-get install fonts-dejavu-core`".to_string())?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes).map_err(|_| format!("{path} is not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draw every plot into `dir`; returns the files written.
pub fn draw_all(rec: &Recorder, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let mut written = Vec::new();
    let throughput = dir.join("throughput.png");
    draw(&throughput, (1000, 520), |root| {
        let groups = [
            ("DNAT 1 stream", Scenario::BulkDnat, "1 stream"),
            ("DNAT 4 streams", Scenario::BulkDnat, "4 streams"),
            ("SNAT 1 stream", Scenario::BulkSnat, "1 stream"),
        ];
        bars(
            root,
            "TCP bulk throughput (median, min-max)",
            "Gbit/s",
            &collect(rec, &groups),
            1.0,
        )
    })?;
    written.push(throughput);
    let rates = dir.join("rates.png");
    draw(&rates, (1300, 520), |root| {
        let (left, right) = root.split_horizontally(900);
        let tcp = [
            ("TCP_RR DNAT", Scenario::RrDnat, "transactions"),
            ("TCP_CRR DNAT", Scenario::Crr, "DNAT connections"),
            ("TCP_CRR SNAT", Scenario::Crr, "SNAT connections"),
        ];
        bars(
            &left,
            "TCP transactions / connections per second",
            "thousand per second",
            &collect(rec, &tcp),
            1e-3,
        )?;
        let udp = [(
            "UDP SNAT, 18-byte datagrams",
            Scenario::UdpSnat,
            "datagrams received",
        )];
        bars(
            &right,
            "UDP packet rate",
            "thousand packets per second",
            &collect(rec, &udp),
            1e-3,
        )
    })?;
    written.push(rates);
    let latency = dir.join("latency.png");
    draw(&latency, (1200, 520), |root| {
        let groups = [
            ("RR p50", Scenario::RrDnat, "latency p50"),
            ("RR p99", Scenario::RrDnat, "latency p99"),
            ("CRR DNAT connect p50", Scenario::Crr, "DNAT connect p50"),
            ("CRR DNAT connect p99", Scenario::Crr, "DNAT connect p99"),
            ("CRR SNAT connect p50", Scenario::Crr, "SNAT connect p50"),
            ("CRR SNAT connect p99", Scenario::Crr, "SNAT connect p99"),
        ];
        bars(
            root,
            "Latency (median over rounds, min-max)",
            "µs",
            &collect(rec, &groups),
            1.0,
        )
    })?;
    written.push(latency);
    let scale = dir.join("scale.png");
    draw(&scale, (1300, 520), |root| {
        let (left, right) = root.split_horizontally(650);
        scale_lines(
            &left,
            rec,
            "connections",
            "New connections/s to the last-published port",
            "connections/s",
        )?;
        scale_lines(
            &right,
            rec,
            "connect p99",
            "First-packet latency p99 (connect())",
            "µs",
        )
    })?;
    written.push(scale);
    Ok(written)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Groups = Vec<(String, Vec<(Variant, Summary)>)>;

fn draw(path: &Path, size: (u32, u32), f: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    f(&root)?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

fn collect(rec: &Recorder, groups: &[(&str, Scenario, &str)]) -> Groups {
    groups
        .iter()
        .map(|(label, s, m)| (label.to_string(), summaries(rec, *s, m)))
        .collect()
}

/// Grouped bars: one group per label, one bar per variant, whiskers from min to max.
fn bars(area: &Area<'_>, title: &str, unit: &str, groups: &Groups, scale: f64) -> Result<()> {
    let n = groups.len();
    let ymax = groups
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, s)| s.max * scale))
        .fold(0.0, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    // Group i is centred on x = i; other key points get no label.
    let fmt = |x: &f64| {
        if (x - x.round()).abs() > 0.01 || *x < -0.01 {
            return String::new();
        }
        labels.get(x.round() as usize).cloned().unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&fmt)
        .y_desc(unit)
        .y_label_formatter(&axis_label)
        .label_style((FONT, 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    // One slot per variant that has a bar in some group, so that a run of two variants
    // gets wide bars and no gap for a variant it did not run.
    let shown: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| {
            groups
                .iter()
                .any(|(_, sums)| sums.iter().any(|(sv, _)| sv == v))
        })
        .collect();
    let width = 0.8 / shown.len().max(1) as f64;
    for (vi, v) in shown.into_iter().enumerate() {
        let bars: Vec<(f64, Summary)> = groups
            .iter()
            .enumerate()
            .filter_map(|(gi, (_, sums))| {
                sums.iter()
                    .find(|(sv, _)| *sv == v)
                    .map(|(_, s)| (gi as f64, *s))
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        let x0 = |g: f64| g - 0.4 + vi as f64 * width;
        chart
            .draw_series(bars.iter().map(|(g, s)| {
                Rectangle::new(
                    [(x0(*g), 0.0), (x0(*g) + width * 0.9, s.median * scale)],
                    color(v).filled(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label(v.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color(v).filled()));
        chart
            .draw_series(bars.iter().map(|(g, s)| {
                let xm = x0(*g) + width * 0.45;
                PathElement::new(
                    vec![(xm, s.min * scale), (xm, s.max * scale)],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Lines over the scale levels (metrics named "<N> ports <what>"), one per variant.
fn scale_lines(area: &Area<'_>, rec: &Recorder, what: &str, title: &str, unit: &str) -> Result<()> {
    let mut series: Vec<(Variant, Vec<(f64, f64)>)> = Vec::new();
    for v in [Variant::Ebpf, Variant::Iptables] {
        let mut metrics: Vec<(u32, String)> = rec
            .samples
            .iter()
            .filter(|s| s.scenario == Scenario::Scale && s.variant == v)
            .filter_map(|s| Some((level_of(&s.metric, what)?, s.metric.clone())))
            .collect();
        metrics.sort();
        metrics.dedup();
        let points = metrics
            .iter()
            .filter_map(|(level, m)| {
                summaries(rec, Scenario::Scale, m)
                    .into_iter()
                    .find(|(sv, _)| *sv == v)
                    .map(|(_, s)| (f64::from(*level), s.median))
            })
            .collect::<Vec<_>>();
        if !points.is_empty() {
            series.push((v, points));
        }
    }
    if series.is_empty() {
        // A run without the scale scenario (or where it failed) still gets the figure,
        // saying so, rather than no figure at all.
        area.titled(title, (FONT, 18)).map_err(|e| anyhow!("{e}"))?;
        let style = TextStyle::from((FONT, 16).into_font()).color(&BLACK);
        area.draw_text("no scale samples in this run", &style, (40, 80))
            .map_err(|e| anyhow!("{e}"))?;
        return Ok(());
    }
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 2.0;
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.5f64..xmax).log_scale(), 0f64..ymax.max(1.0))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("published ports")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(unit)
        .y_label_formatter(&axis_label)
        .label_style((FONT, 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (v, points) in series {
        let c = color(v);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))
            .map_err(|e| anyhow!("{e}"))?
            .label(v.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Axis numbers without needless decimals.
fn axis_label(v: &f64) -> String {
    if v.abs() >= 10.0 || *v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// "10,000 ports connections" with what = "connections" -> 10000.
fn level_of(metric: &str, what: &str) -> Option<u32> {
    let rest = metric.strip_suffix(what)?.trim_end();
    let n = rest
        .strip_suffix("ports")
        .or_else(|| rest.strip_suffix("port"))?;
    n.trim().replace(',', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_metric_levels() {
        assert_eq!(
            level_of("10,000 ports connections", "connections"),
            Some(10_000)
        );
        assert_eq!(level_of("1 port connect p99", "connect p99"), Some(1));
        assert_eq!(level_of("1 ports connect p50", "connect p99"), None);
    }
}
