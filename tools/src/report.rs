//! Histograms and their outputs: percentile summaries, the HdrHistogram
//! `.hgrm` percentile-distribution text, and an SVG latency-by-percentile
//! plot.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Highest trackable value: 60 s in µs.
pub const HIST_MAX_US: u64 = 60_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("static histogram bounds")
}

#[inline]
pub fn record(h: &mut Histogram<u64>, us: u64) {
    // Values are clamped into range: saturate rather than drop.
    let _ = h.record(us.clamp(1, HIST_MAX_US));
}

/// Percentiles of a latency histogram, in µs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pcts {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Pcts {
    pub fn of(h: &Histogram<u64>) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        Pcts {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// The `.hgrm` percentile distribution (HdrHistogram's
/// `outputPercentileDistribution` format, 5 ticks per half-distance), with
/// values scaled from µs to ms as wrk2 and the HdrHistogram plotter expect.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let scale = 1000.0;
    let mut s = String::new();
    let _ = writeln!(s, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let val = h.highest_equivalent(v.value_iterated_to()) as f64 / scale;
            if q < 1.0 {
                let _ = writeln!(s, "{:12.3} {:2.12} {:10} {:14.2}", val, q, total, 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(s, "{:12.3} {:2.12} {:10}", val, q, total);
            }
        }
    }
    let mean = if h.is_empty() { 0.0 } else { h.mean() / scale };
    let sd = if h.is_empty() { 0.0 } else { h.stdev() / scale };
    let _ = writeln!(s, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", mean, sd);
    let _ = writeln!(s, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / scale, h.len());
    let _ = writeln!(s, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_bucket_count(h));
    s
}

/// HdrHistogram's sub-bucket count: the smallest power of two ≥ 2 × 10^sigfig
/// (2048 for 3 significant figures), as its `outputPercentileDistribution`
/// footer prints it.
pub fn sub_bucket_count(h: &Histogram<u64>) -> u64 {
    (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
}

/// Parses the (percentile, value) rows of an `.hgrm` file.
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(v), Some(p)) = (it.next(), it.next()) else {
            continue;
        };
        if let (Ok(v), Ok(p)) = (v.parse::<f64>(), p.parse::<f64>()) {
            out.push((p, v));
        }
    }
    out
}

/// One line on a plot: label and (percentile, value in ms) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An SVG latency-by-percentile plot (x: log scale of 1/(1-p) from 0% to
/// 99.9999%, y: latency in ms), like HdrHistogram's plotter.
pub fn svg(title: &str, series: &[Series]) -> String {
    let (w, h) = (900.0f64, 500.0f64);
    let (l, r, t, b) = (70.0f64, 200.0f64, 40.0f64, 50.0f64);
    let pw = w - l - r;
    let ph = h - t - b;
    let xmax = 6.0f64; // log10(1/(1-0.999999))
    let ymax_raw = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    let ymax = nice_ceil(ymax_raw.max(0.001) * 1.05);
    let xpos = |p: f64| {
        let x = if p >= 1.0 { xmax } else { (1.0 / (1.0 - p)).log10().min(xmax) };
        l + x / xmax * pw
    };
    let ypos = |v: f64| t + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ =
        writeln!(s, r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, l + pw / 2.0, esc(title));
    for (i, lab) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"].iter().enumerate() {
        let x = l + i as f64 / xmax * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{lab}</text>"##,
            t + ph,
            t + ph + 16.0
        );
    }
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let y = ypos(v);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            fmt_ms(v)
        );
    }
    let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#, l + pw / 2.0, h - 10.0);
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        t + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = se.points.iter().map(|&(p, v)| format!("{:.1},{:.1}", xpos(p), ypos(v))).collect();
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#, pts.join(" "));
        let ly = t + 14.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            l + pw + 12.0,
            ly - 4.0,
            l + pw + 32.0,
            ly - 4.0,
            l + pw + 38.0,
            ly,
            esc(&se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn nice_ceil(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Serializes a histogram (HdrHistogram V2, base64) for child→parent
/// transfer in multi-process mode.
pub fn hist_to_b64(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    let mut buf = Vec::new();
    use hdrhistogram::serialization::Serializer as _;
    hdrhistogram::serialization::V2Serializer::new().serialize(h, &mut buf).expect("serialize to Vec");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn hist_from_b64(s: &str) -> anyhow::Result<Histogram<u64>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new().deserialize(&mut &bytes[..])?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_header_rows_and_footer() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            record(&mut h, v);
        }
        let text = hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("#[Max     =       10.0"), "{text}");
        assert!(text.contains(&format!("#[Buckets = {:12}, SubBuckets     =         2048]", h.buckets())), "{text}");
        assert_eq!(sub_bucket_count(&h), 2048);
        let rows = parse_hgrm(&text);
        assert!(rows.len() > 20);
        assert_eq!(rows.last().unwrap().0, 1.0);
        // Values are in ms: the median of 1..=10000 µs is about 5 ms.
        let med = rows.iter().find(|r| r.0 >= 0.5).unwrap().1;
        assert!((4.9..5.1).contains(&med), "{med}");
        let p = Pcts::of(&h);
        assert_eq!(p.count, 10_000);
        assert!(p.p99 >= 9_890 && p.p99 <= 9_910);
    }

    #[test]
    fn hist_b64_roundtrip_and_svg() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, 123);
        record(&mut h, u64::MAX);
        let back = hist_from_b64(&hist_to_b64(&h)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.max(), h.max());
        let svg = svg("t<1>", &[Series { label: "a".into(), points: parse_hgrm(&hgrm(&h)) }]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t&lt;1&gt;"));
    }
}
