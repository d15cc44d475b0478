//! `docs/bench.svg`: verifies per second against modulus size, log scale, one line per backend
//! and board (ESIGN solid with circles, RSA dashed with triangles). SVG through plotters with
//! text as SVG `<text>` (no fonts or system libraries needed).

use std::collections::BTreeMap;

use plotters::prelude::*;

use super::Report;
use crate::crypto::Scheme;

/// One line of the plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The backend or board; lines of one backend share a colour.
    pub backend: String,
    pub scheme: Scheme,
    /// (modulus bits, verifies/s), sorted by bits.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn name(&self) -> String {
        let s = match self.scheme {
            Scheme::Esign => "ESIGN",
            _ => "RSA",
        };
        format!("{} ({s})", self.backend)
    }
}

/// The lines the report has figures for.
pub fn series(r: &Report) -> Vec<Series> {
    let mut m: BTreeMap<(usize, String, u8), Series> = BTreeMap::new();
    let mut add = |order: usize, backend: String, scheme: Scheme, bits: usize, v: f64| {
        if v.is_finite() && v > 0.0 {
            let key = (order, backend.clone(), (scheme != Scheme::Esign) as u8);
            m.entry(key).or_insert_with(|| Series { backend, scheme, points: Vec::new() }).points.push((bits as f64, v));
        }
    };
    for row in &r.rows {
        let order = if row.implementation.starts_with("kessai") { 0 } else { 1 };
        add(order, row.implementation.clone(), row.scheme, row.bits, row.median_verifies_per_second);
    }
    for row in &r.link.rows {
        let who = match row.verifies_per_simulated_second {
            Some(_) => format!("sim board L{} @ {} MHz, {:.0} baud, end to end", row.lanes, row.clock_hz as f64 / 1e6, row.baud.unwrap_or(0.0)),
            None => format!("{} L{}, end to end", row.backend, row.lanes),
        };
        add(2, who, row.scheme, row.bits, row.board_rate());
    }
    for lanes in r.rtl.iter().filter(|l| l.clock_hz > 0) {
        let clock = lanes.clock_hz as f64;
        for row in &lanes.rows {
            add(3, format!("RTL L{} @ {} MHz, verify unit", row.lanes, clock / 1e6), row.scheme, row.bits, clock / row.cycles as f64);
        }
    }
    for b in &r.boards {
        if let Some(f) = b.fmax_mhz {
            for x in &b.rates {
                if let Some(v) = x.verifies_per_second_at_fmax {
                    add(4, format!("{} L{} @ Fmax {f:.1} MHz", b.board, b.lanes.unwrap_or(0)), x.scheme, x.bits, v);
                }
            }
        }
    }
    let mut out: Vec<Series> = m.into_values().collect();
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Colours that read on white (Tableau 10, then darker tones), one per backend.
const PALETTE: [(u8, u8, u8); 16] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (57, 59, 121),
    (99, 121, 57),
    (140, 109, 49),
    (132, 60, 57),
    (123, 65, 115),
    (0, 0, 0),
];

/// 1 -> "1", 10000 -> "10,000", 0.5 -> "0.50".
fn axis_label(y: f64) -> String {
    if y < 1.0 {
        format!("{y:.2}")
    } else if y < 100.0 {
        format!("{y:.0}")
    } else {
        super::report::rate(y)
    }
}

/// The plot as an SVG document.
pub fn svg(r: &Report) -> Result<String, String> {
    let lines = series(r);
    if lines.is_empty() {
        return Err("the report has no verify rates to plot".into());
    }
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in lines.iter().flat_map(|s| &s.points) {
        xmin = xmin.min(p.0);
        xmax = xmax.max(p.0);
        ymin = ymin.min(p.1);
        ymax = ymax.max(p.1);
    }
    let (xmin, xmax) = (xmin - 128.0, xmax + 128.0);
    let (ymin, ymax) = (10f64.powf(ymin.log10().floor()), 10f64.powf(ymax.log10().ceil()));

    let mut backends: Vec<&str> = Vec::new();
    for s in &lines {
        if !backends.contains(&s.backend.as_str()) {
            backends.push(&s.backend);
        }
    }
    let colour = |backend: &str| {
        let (r, g, b) = PALETTE[backends.iter().position(|b| *b == backend).unwrap_or(0) % PALETTE.len()];
        RGBColor(r, g, b).to_rgba()
    };

    let legend_h = 18 * lines.len() as u32 + 40;
    let (w, h) = (1200u32, 620u32.max(legend_h));
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (left, right) = root.split_horizontally(760);
        let mut chart = ChartBuilder::on(&left)
            .caption("Kessai verify throughput vs modulus size", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(xmin..xmax, (ymin..ymax).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("modulus bits")
            .y_desc("verifies per second (log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| axis_label(*y))
            .draw()
            .map_err(e)?;
        for s in &lines {
            let c = colour(&s.backend);
            let style = ShapeStyle { color: c, filled: true, stroke_width: 2 };
            match s.scheme {
                Scheme::Esign => {
                    chart.draw_series(LineSeries::new(s.points.iter().copied(), style)).map_err(e)?;
                    chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 4, style))).map_err(e)?;
                }
                _ => {
                    chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style)).map_err(e)?;
                    chart.draw_series(s.points.iter().map(|p| TriangleMarker::new(*p, 5, style))).map_err(e)?;
                }
            }
        }
        // The legend, beside the chart: a marker, a stroke and the series name per line.
        right.draw(&Text::new("series", (10, 24), ("sans-serif", 16))).map_err(e)?;
        for (i, s) in lines.iter().enumerate() {
            let y = 48 + 18 * i as i32;
            let c = colour(&s.backend);
            let style = ShapeStyle { color: c, filled: true, stroke_width: 2 };
            right.draw(&PathElement::new(vec![(10, y), (34, y)], style)).map_err(e)?;
            match s.scheme {
                Scheme::Esign => right.draw(&Circle::new((22, y), 4, style)).map_err(e)?,
                _ => right.draw(&TriangleMarker::new((22, y), 5, style)).map_err(e)?,
            }
            right.draw(&Text::new(s.name(), (42, y - 7), ("sans-serif", 13))).map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(out)
}
