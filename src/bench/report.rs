//! How a run is shown: the progress line, the final summary, and `report.html`, one
//! self-contained page (inline SVG, no scripts, nothing fetched) with throughput over time
//! and the latency percentile distributions on HdrHistogram's log-scaled percentile axis.

use std::fmt::Write;

use super::{FlowSummary, Results, Tick};

pub fn progress_line(tick: &Tick) -> String {
    let p99 = |us: Option<u64>| us.map_or("-".to_string(), |us| format!("{:.3} ms", us as f64 / 1000.0));
    format!(
        "{:>6.1}s  produced {:>10.0} rec/s {:>9.1} MB/s p99 {:>10}  consumed {:>10.0} rec/s {:>9.1} MB/s p99 {:>10}",
        tick.t_s,
        tick.produced_records_per_s,
        tick.produced_mb_per_s,
        p99(tick.publish_p99_us),
        tick.consumed_records_per_s,
        tick.consumed_mb_per_s,
        p99(tick.consume_p99_us)
    )
}

fn flow_lines(out: &mut String, name: &str, flow: &FlowSummary, of_loopback: Option<f64>) {
    let _ = write!(
        out,
        "{name}: {} records, {:.1} MB in {:.2} s on {} connection(s): {:.0} records/s, {:.1} MB/s",
        flow.records,
        flow.bytes as f64 / 1e6,
        flow.seconds,
        flow.connections,
        flow.records_per_s,
        flow.mb_per_s
    );
    if let Some(ratio) = of_loopback {
        let _ = write!(out, " ({:.1}% of loopback)", ratio * 100.0);
    }
    let _ = writeln!(out, "\n  {} latency: {}", flow.latency_kind.replace('_', "-"), flow.latency_us.line());
}

/// The final summary, as printed.
pub fn summary(results: &Results) -> String {
    let mut out = String::new();
    let ratios = results.ratios.as_ref();
    if let Some(produce) = &results.produce {
        flow_lines(&mut out, "produce", produce, ratios.and_then(|r| r.produce_of_loopback));
    }
    if let Some(consume) = &results.consume {
        flow_lines(&mut out, "consume", consume, ratios.and_then(|r| r.consume_of_loopback));
    }
    if let Some(cpu) = &results.broker {
        let _ = writeln!(
            out,
            "broker (pid {}): {:.2} CPU-s, {:.3} CPU-s per GB moved, {:.0} MB per CPU-s",
            cpu.pid, cpu.cpu_seconds, cpu.cpu_s_per_gb, cpu.mb_per_cpu_s
        );
    }
    if let Some(steal) = results.host_steal_share {
        let _ = writeln!(out, "host: the hypervisor withheld {:.1}% of this machine's CPU time (steal)", steal * 100.0);
    }
    if let (Some(produce_of_disk), Some(per_sync)) =
        (ratios.and_then(|r| r.produce_of_disk_sync_write), ratios.and_then(|r| r.produce_records_per_sync_4k))
    {
        let _ = writeln!(
            out,
            "produce against the disk: {:.1}% of its write + fdatasync MB/s, {:.1}× its 4 KiB fdatasync rate in records/s",
            produce_of_disk * 100.0,
            per_sync
        );
    }
    if let Some(b) = &results.baseline {
        let _ = writeln!(
            out,
            "baseline: loopback TCP {:.1} MB/s (CPUs {} and {}), page-cache write {:.1} MB/s\n\
             baseline disk: write + fdatasync {:.1} MB/s, append + fdatasync {:.0}/s (4 KiB), {:.0}/s (1 MiB)",
            b.loopback_mb_per_s,
            b.loopback_cpus.0,
            b.loopback_cpus.1,
            b.page_cache_write_mb_per_s,
            b.disk_sync_write_mb_per_s,
            b.sync_4k_per_s,
            b.sync_1m_per_s
        );
    }
    out
}

struct Series<'a> {
    name: String,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 320.0;
const MARGIN: (f64, f64, f64, f64) = (64.0, 44.0, 36.0, 48.0); // left, right, top, bottom

/// A rounded-up axis maximum and its tick step.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let magnitude = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|s| s * magnitude)
        .find(|s| max / s <= 6.0)
        .unwrap_or(magnitude * 10.0);
    ((max / step).ceil() * step, step)
}

/// An SVG line chart; `x_ticks` labels the x axis where given, else it is linear from 0.
fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], x_ticks: Option<&[(f64, &str)]>) -> String {
    let (left, right, top, bottom) = MARGIN;
    let (plot_w, plot_h) = (WIDTH - left - right, HEIGHT - top - bottom);
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = match x_ticks {
        Some(ticks) => ticks.last().map_or(1.0, |t| t.0),
        None => nice_axis(all.clone().map(|p| p.0).fold(0.0, f64::max)).0,
    };
    let (y_max, y_step) = nice_axis(all.map(|p| p.1).fold(0.0, f64::max));
    let x = |v: f64| left + v / x_max * plot_w;
    let y = |v: f64| top + plot_h - v / y_max * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#, left, escape(title));
    let mut value = 0.0;
    while value <= y_max + y_step / 2.0 {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{0}" y1="{1}" y2="{1}" stroke="#ddd"/><text x="{2}" y="{3}" text-anchor="end">{4}</text>"##,
            left + plot_w,
            y(value),
            left - 6.0,
            y(value) + 4.0,
            trim(value)
        );
        value += y_step;
    }
    let owned_ticks: Vec<(f64, String)> = match x_ticks {
        Some(ticks) => ticks.iter().map(|(v, l)| (*v, l.to_string())).collect(),
        None => {
            let step = nice_axis(x_max).1;
            (0..=(x_max / step).round() as usize).map(|i| (i as f64 * step, trim(i as f64 * step))).collect()
        }
    };
    for (v, label) in &owned_ticks {
        let _ = write!(
            svg,
            r##"<line x1="{0}" x2="{0}" y1="{top}" y2="{1}" stroke="#eee"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(*v),
            top + plot_h,
            top + plot_h + 16.0,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text>"##,
        left + plot_w / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        top + plot_h / 2.0,
        escape(y_label)
    );
    // The legend sits above the plot, right-aligned, so that it never hides a line.
    let mut legend_x = left + plot_w;
    for s in series.iter().rev() {
        let points: Vec<String> = s.points.iter().map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py))).collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{0}" stroke-width="2" points="{1}"/><text x="{2}" y="18" text-anchor="end" fill="{0}">■ {3}</text>"#,
            s.color,
            points.join(" "),
            legend_x,
            escape(&s.name)
        );
        legend_x -= 24.0 + 7.0 * s.name.chars().count() as f64;
    }
    svg.push_str("</svg>");
    svg
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// HdrHistogram's percentile axis: x = log10(1 / (1 - p)), so 90%, 99%, 99.9%… are evenly spaced.
fn percentile_x(percentile: f64) -> f64 {
    let tail = (1.0 - percentile / 100.0).max(1e-6);
    -tail.log10()
}

const PERCENTILE_TICKS: [(f64, &str); 7] =
    [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%"), (5.0, "99.999%"), (6.0, "99.9999%")];

pub fn html(results: &Results) -> String {
    let mut body = String::new();
    let _ = write!(body, "<h1>sluice bench</h1><pre>{}</pre>", escape(&summary(results)));
    if !results.timeline.is_empty() {
        let line = |f: fn(&Tick) -> f64| results.timeline.iter().map(|t| (t.t_s, f(t))).collect::<Vec<_>>();
        let mut series = Vec::new();
        if results.produce.is_some() {
            series.push(Series { name: "produced".into(), color: "#1f77b4", points: line(|t| t.produced_mb_per_s) });
        }
        if results.consume.is_some() {
            series.push(Series { name: "consumed".into(), color: "#ff7f0e", points: line(|t| t.consumed_mb_per_s) });
        }
        body.push_str(&chart("Throughput over time", "seconds", "MB/s", &series, None));
        let p99 = |f: fn(&Tick) -> Option<u64>| {
            results.timeline.iter().filter_map(|t| Some((t.t_s, f(t)? as f64 / 1000.0))).collect::<Vec<_>>()
        };
        let series = [
            Series { name: "publish p99".into(), color: "#1f77b4", points: p99(|t| t.publish_p99_us) },
            Series { name: "consume p99".into(), color: "#ff7f0e", points: p99(|t| t.consume_p99_us) },
        ];
        body.push_str(&chart("p99 latency per second", "seconds", "ms", &series, None));
    }
    let flows = [("#1f77b4", &results.produce), ("#ff7f0e", &results.consume)];
    let series: Vec<Series> = flows
        .iter()
        .filter_map(|(color, flow)| {
            let flow = flow.as_ref()?;
            let points =
                flow.latency_us.distribution.iter().map(|&(p, us)| (percentile_x(p), us as f64 / 1000.0)).collect();
            Some(Series { name: format!("{} latency", flow.latency_kind.replace('_', "-")), color, points })
        })
        .collect();
    if !series.is_empty() {
        body.push_str(&chart("Latency by percentile", "percentile", "ms", &series, Some(&PERCENTILE_TICKS)));
    }
    let json = serde_json::to_string_pretty(results).unwrap_or_default();
    let _ = write!(body, "<h2>results.json</h2><pre>{}</pre>", escape(&json));
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sluice bench report</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}svg{{display:block;margin:1.5em 0}}\
         pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_spaces_nines_evenly() {
        assert_eq!(percentile_x(0.0), 0.0);
        assert!((percentile_x(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-6);
        assert_eq!(percentile_x(100.0), 6.0);
    }

    #[test]
    fn axes_round_up_to_a_few_ticks() {
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        let (max, step) = nice_axis(437.0);
        assert!(max >= 437.0 && max / step <= 6.0, "{max} {step}");
    }
}
