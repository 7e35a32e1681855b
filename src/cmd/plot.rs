//! The reports' SVG plots, drawn with plotters' SVG backend: real axes with round ticks and
//! units, legends, and one look for every plot (size, fonts, palette).

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use verify::report::MaskPoint;

const SIZE: (u32, u32) = (600, 360);
const PALETTE: [RGBColor; 7] = [
    RGBColor(0x22, 0x77, 0xbb),
    RGBColor(0xdd, 0x77, 0x22),
    RGBColor(0x22, 0xaa, 0x66),
    RGBColor(0xaa, 0x33, 0xcc),
    RGBColor(0x33, 0xaa, 0xaa),
    RGBColor(0xcc, 0x33, 0x33),
    RGBColor(0x77, 0x77, 0x77),
];
const FONT: &str = "sans-serif";

/// A named series of (x, y) points; `marked` points are drawn larger, ringed in black.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub labels: Vec<String>,
    pub marked: Vec<bool>,
    pub line: bool,
}

/// A horizontal reference line (e.g. a budget) with its legend text.
pub struct HLine {
    pub y: f64,
    pub name: String,
}

/// What a plot shows.
pub struct Plot<'a> {
    /// The `<svg>` element's id.
    pub id: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    pub series: Vec<Series>,
    pub hline: Option<HLine>,
    /// Where the legend goes (away from the data).
    pub legend: SeriesLabelPosition,
    /// Whole-number x ticks (layers).
    pub x_integer: bool,
}

fn range(v: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let v: Vec<f64> = v.filter(|x| x.is_finite() && (!log || *x > 0.0)).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return if log { (1e-4, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 2.0, hi * 2.0)
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.05).max(1e-6);
        (lo - pad, hi + pad)
    }
}

impl Plot<'_> {
    /// The SVG document.
    pub fn svg(&self) -> anyhow::Result<String> {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = range(xs, false);
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.hline.as_ref().map(|h| h.y));
        let (y0, y1) = range(ys, self.log_y);
        let mut buf = String::new();
        {
            let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            if self.log_y {
                self.draw(&root, x0..x1, (y0..y1).log_scale())?;
            } else {
                self.draw(&root, x0..x1, y0..y1)?;
            }
            root.present().map_err(err)?;
        }
        Ok(buf.replacen(
            "<svg ",
            &format!(
                "<svg id=\"{}\" role=\"img\" aria-label=\"{} against {}\" ",
                self.id, self.y_label, self.x_label
            ),
            1,
        ))
    }

    fn draw<Y>(
        &self,
        root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
        x: std::ops::Range<f64>,
        y: Y,
    ) -> anyhow::Result<()>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        let x_fmt = |v: &f64| {
            if self.x_integer {
                format!("{v:.0}")
            } else {
                // Round ticks as written by hand: 2.5, not 2.5000000000000004 or 2.500.
                let t = format!("{v:.6}");
                t.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        };
        chart
            .configure_mesh()
            .x_label_formatter(&x_fmt)
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(err)?;
        let (xa, xb) = (chart.x_range().start, chart.x_range().end);
        if let Some(h) = &self.hline {
            chart
                .draw_series(LineSeries::new(
                    [(xa, h.y), (xb, h.y)],
                    ShapeStyle::from(&RED).stroke_width(1),
                ))
                .map_err(err)?
                .label(h.name.clone())
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
        }
        for (i, s) in self.series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            if s.line {
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?;
            }
            chart
                .draw_series(s.points.iter().enumerate().map(|(j, &p)| {
                    let big = s.marked.get(j).copied().unwrap_or(false);
                    let label = s.labels.get(j).cloned().unwrap_or_default();
                    EmptyElement::at(p)
                        + Circle::new((0, 0), if big { 7 } else { 4 }, c.filled())
                        + Circle::new(
                            (0, 0),
                            if big { 9 } else { 0 },
                            ShapeStyle::from(&BLACK).stroke_width(2),
                        )
                        + Text::new(label, (8, -12), (FONT, 11).into_font().color(&c))
                }))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0xaa, 0xaa, 0xaa))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

/// A mask ladder: KLD against dense (log) over the attention speed-up, one series per kind and
/// context, the shipped point ringed, the budget as a line.
pub fn mask_curve(id: &str, curve: &[MaskPoint], max_kld: Option<f64>) -> anyhow::Result<String> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for p in curve.iter().filter(|p| p.kind != "dense") {
        let k = (p.kind.clone(), p.ctx);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let series = keys
        .iter()
        .map(|(kind, ctx)| {
            let pts: Vec<&MaskPoint> = curve
                .iter()
                .filter(|p| &p.kind == kind && p.ctx == *ctx)
                .collect();
            Series {
                name: format!("{kind}, ctx {ctx}"),
                points: pts
                    .iter()
                    .map(|p| (p.attention_speedup, p.kld.max(1e-6)))
                    .collect(),
                labels: pts.iter().map(|p| format!("{}", p.setting)).collect(),
                marked: pts.iter().map(|p| p.chosen).collect(),
                line: true,
            }
        })
        .collect();
    Plot {
        id,
        x_label: "attention speed-up over dense (×)",
        y_label: "mean KLD vs dense (nats)",
        log_y: true,
        series,
        hline: max_kld.map(|y| HLine {
            y,
            name: format!("budget {y}"),
        }),
        legend: SeriesLabelPosition::LowerRight,
        x_integer: false,
    }
    .svg()
}
