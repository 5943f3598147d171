//! The report's charts, drawn by plotters onto any backend: SVG for the
//! HTML page, and [`Recorder`] (shapes kept as data) for the PDF page.
//! Missing data are gaps in a line or a "missing" mark on a bar, never a
//! zero.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontTransform,
};

/// Chart size in pixels (CSS pixels in HTML; points × 1.33 in PDF).
pub const WIDTH: u32 = 820;
pub const HEIGHT: u32 = 320;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

type ChartResult = Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// Stacked bars: one bar per month, one segment per series (e.g. purpose).
/// `values[s][m]` is series `s` in month `m`; a month where every series
/// is `None` is marked "missing".
pub fn stacked_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    unit: &str,
    months: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> ChartResult {
    root.fill(&WHITE).map_err(err)?;
    let totals: Vec<f64> = (0..months.len())
        .map(|m| series.iter().filter_map(|(_, v)| v[m]).sum())
        .collect();
    // Headroom for the totals above the bars; the legend has a column of
    // its own on the right, so no bar is ever hidden under it.
    let ymax = totals.iter().copied().fold(0.0, f64::max).max(1.0) * 1.15;
    let n = months.len().max(1) as f64;
    let labels = months.to_vec();
    let (width, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    draw_legend(&legend, series.iter().map(|(name, _)| name.as_str()))?;
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(months.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let k = x - 0.5;
            if (k - k.round()).abs() < 1e-6 && k >= 0.0 {
                labels.get(k.round() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .y_label_formatter(&|y| format_number(*y))
        .draw()
        .map_err(err)?;
    let mut base = vec![0.0; months.len()];
    for (s, (_, values)) in series.iter().enumerate() {
        let c = color(s);
        let rects: Vec<_> = values
            .iter()
            .enumerate()
            .filter_map(|(m, v)| {
                let v = (*v)?;
                let y0 = base[m];
                base[m] += v;
                Some(Rectangle::new(
                    [(m as f64 + 0.2, y0), (m as f64 + 0.8, y0 + v)],
                    c.filled(),
                ))
            })
            .collect();
        chart.draw_series(rects).map_err(err)?;
    }
    for (m, total) in totals.iter().enumerate() {
        let missing = series.iter().all(|(_, v)| v[m].is_none());
        let text = if missing {
            "missing".to_owned()
        } else {
            format_number(*total)
        };
        chart
            .draw_series(std::iter::once(Text::new(
                text,
                (
                    m as f64 + 0.5,
                    if missing {
                        ymax * 0.05
                    } else {
                        *total + ymax * 0.02
                    },
                ),
                ("sans-serif", 14)
                    .into_font()
                    .color(if missing { &RED } else { &BLACK })
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Width of the legend column beside a stacked bar chart, in pixels.
const LEGEND_WIDTH: u32 = 170;

/// A legend in an area of its own: a swatch and a name per series, in
/// the series' colours, from the top.
fn draw_legend<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: impl Iterator<Item = &'a str>,
) -> ChartResult {
    for (s, name) in names.enumerate() {
        let y = 44 + 22 * s as i32;
        area.draw(&Rectangle::new(
            [(6, y - 6), (20, y + 6)],
            color(s).filled(),
        ))
        .map_err(err)?;
        area.draw(&Text::new(
            name.to_owned(),
            (28, y),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Lines over x = 0..n (days or hours), `None` leaving a gap. `x_label`
/// names tick positions. `split` draws a dashed vertical line (e.g. the
/// retrofit date).
pub fn lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    unit: &str,
    x_label: &dyn Fn(usize) -> String,
    series: &[(String, Vec<Option<f64>>)],
    split: Option<(usize, &str)>,
) -> ChartResult {
    root.fill(&WHITE).map_err(err)?;
    let n = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..(n - 1) as f64, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|x| x_label(x.round().max(0.0) as usize))
        .y_desc(unit)
        .y_label_formatter(&|y| format_number(*y))
        .draw()
        .map_err(err)?;
    for (s, (name, values)) in series.iter().enumerate() {
        let c = color(s);
        let style = ShapeStyle::from(&c).stroke_width(2);
        let mut first = true;
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let mut segments = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => segment.push((i as f64, *v)),
                None if !segment.is_empty() => segments.push(std::mem::take(&mut segment)),
                None => {}
            }
        }
        if !segment.is_empty() {
            segments.push(segment);
        }
        for seg in segments {
            let drawn = if seg.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(seg[0], 2, style.filled())))
                    .map_err(err)?
            } else {
                chart
                    .draw_series(LineSeries::new(seg, style))
                    .map_err(err)?
            };
            if first {
                drawn
                    .label(name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                first = false;
            }
        }
    }
    if let Some((at, label)) = split {
        let dashed: Vec<_> = (0..20)
            .filter(|k| k % 2 == 0)
            .map(|k| {
                PathElement::new(
                    vec![
                        (at as f64, ymax * k as f64 / 20.0),
                        (at as f64, ymax * (k + 1) as f64 / 20.0),
                    ],
                    BLACK,
                )
            })
            .collect();
        chart.draw_series(dashed).map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.to_owned(),
                (at as f64, ymax * 0.97),
                ("sans-serif", 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Top)),
            )))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Thousands separated, sensible decimals.
pub fn format_number(v: f64) -> String {
    let abs = v.abs();
    let s = if abs >= 100.0 {
        format!("{:.0}", v)
    } else if abs >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    };
    super::tables::group_digits(&s)
}

/// Renders a chart to an SVG string.
pub fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> ChartResult,
) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root)?;
    }
    Ok(out)
}

/// A drawn shape, in backend pixels (origin top left).
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Line {
        points: Vec<(i32, i32)>,
        color: (u8, u8, u8),
        alpha: f64,
        width: u32,
    },
    Rect {
        from: (i32, i32),
        to: (i32, i32),
        color: (u8, u8, u8),
        alpha: f64,
        fill: bool,
    },
    Polygon {
        points: Vec<(i32, i32)>,
        color: (u8, u8, u8),
        alpha: f64,
    },
    Circle {
        center: (i32, i32),
        radius: u32,
        color: (u8, u8, u8),
        fill: bool,
    },
    Text {
        text: String,
        at: (i32, i32),
        /// Font size in pixels.
        size: f64,
        color: (u8, u8, u8),
        /// Horizontal anchor: -1 left, 0 centre, 1 right.
        h: i8,
        /// Vertical anchor: -1 top, 0 centre, 1 bottom.
        v: i8,
        /// Rotated a quarter turn counter-clockwise (axis descriptions).
        vertical: bool,
    },
}

/// A plotters backend that keeps what is drawn as [`Shape`]s, so another
/// format (the PDF page) can draw the same chart.
#[derive(Debug)]
pub struct Recorder<'a> {
    pub size: (u32, u32),
    pub shapes: &'a mut Vec<Shape>,
}

impl<'a> Recorder<'a> {
    pub fn new(shapes: &'a mut Vec<Shape>) -> Recorder<'a> {
        Recorder {
            size: (WIDTH, HEIGHT),
            shapes,
        }
    }
}

/// Records a chart's shapes.
pub fn record(
    draw: impl FnOnce(&DrawingArea<Recorder<'_>, Shift>) -> ChartResult,
) -> Result<Vec<Shape>, String> {
    let mut shapes = Vec::new();
    {
        let root = Recorder::new(&mut shapes).into_drawing_area();
        draw(&root)?;
    }
    Ok(shapes)
}

#[derive(Debug)]
pub struct NoError;

impl std::fmt::Display for NoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("recording cannot fail")
    }
}

impl std::error::Error for NoError {}

fn rgb(c: BackendColor) -> (u8, u8, u8) {
    c.rgb
}

impl DrawingBackend for Recorder<'_> {
    type ErrorType = NoError;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<NoError>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<NoError>> {
        Ok(())
    }

    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        if c.alpha > 0.0 {
            self.shapes.push(Shape::Rect {
                from: p,
                to: (p.0 + 1, p.1 + 1),
                color: rgb(c),
                alpha: c.alpha,
                fill: true,
            });
        }
        Ok(())
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        self.draw_path([from, to], style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        let c = style.color();
        if c.alpha > 0.0 {
            self.shapes.push(Shape::Rect {
                from,
                to,
                color: rgb(c),
                alpha: c.alpha,
                fill,
            });
        }
        Ok(())
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        let c = style.color();
        if c.alpha > 0.0 {
            self.shapes.push(Shape::Line {
                points: path.into_iter().collect(),
                color: rgb(c),
                alpha: c.alpha,
                width: style.stroke_width(),
            });
        }
        Ok(())
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        let c = style.color();
        if c.alpha > 0.0 {
            self.shapes.push(Shape::Circle {
                center,
                radius,
                color: rgb(c),
                fill,
            });
        }
        Ok(())
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        let c = style.color();
        if c.alpha > 0.0 {
            self.shapes.push(Shape::Polygon {
                points: vert.into_iter().collect(),
                color: rgb(c),
                alpha: c.alpha,
            });
        }
        Ok(())
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<NoError>> {
        let c = style.color();
        if c.alpha > 0.0 {
            self.shapes.push(Shape::Text {
                text: text.to_owned(),
                at: pos,
                size: style.size() / 1.24,
                color: rgb(c),
                h: match style.anchor().h_pos {
                    HPos::Left => -1,
                    HPos::Center => 0,
                    HPos::Right => 1,
                },
                v: match style.anchor().v_pos {
                    VPos::Top => -1,
                    VPos::Center => 0,
                    VPos::Bottom => 1,
                },
                vertical: matches!(style.transform(), FontTransform::Rotate270),
            });
        }
        Ok(())
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<NoError>> {
        // Helvetica averages about half an em per character.
        let size = style.size() / 1.24;
        Ok((
            (text.chars().count() as f64 * size * 0.52).ceil() as u32,
            size.ceil() as u32,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(root: &DrawingArea<impl DrawingBackend, Shift>) -> ChartResult {
        stacked_bars(
            root,
            "Electricity by month and purpose",
            "kWh",
            &["Jan".into(), "Feb".into(), "Mar".into()],
            &[
                (
                    "public_lighting".into(),
                    vec![Some(1200.0), Some(1100.0), None],
                ),
                ("lifts".into(), vec![Some(800.0), Some(900.0), None]),
            ],
        )
    }

    #[test]
    fn svg_charts_carry_bars_labels_and_the_missing_mark() {
        #[allow(clippy::redundant_closure)] // the closure is generic over the backend's lifetime
        let svg = svg(|root| sample(root)).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        // Four bar segments and the background at least.
        assert!(svg.matches("<rect").count() > 4);
        for text in [
            "Electricity by month and purpose",
            "public_lighting",
            "lifts",
            "missing",
            "2,000",
            "Jan",
        ] {
            assert!(svg.contains(text), "no `{text}` in the SVG");
        }
    }

    #[test]
    fn the_recorder_sees_the_same_chart() {
        #[allow(clippy::redundant_closure)]
        let shapes = record(|root| sample(root)).unwrap();
        let texts: Vec<&str> = shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            texts.contains(&"missing") && texts.contains(&"Feb"),
            "{texts:?}"
        );
        let filled = shapes
            .iter()
            .filter(
                |s| matches!(s, Shape::Rect { fill: true, color, .. } if *color == (31, 119, 180)),
            )
            .count();
        assert!(
            filled >= 2,
            "the lighting bars of Jan and Feb (and the legend)"
        );
    }

    #[test]
    fn lines_leave_gaps_for_missing_days() {
        let shapes = record(|root| {
            lines(
                root,
                "Baseline vs actual",
                "kWh/day",
                &|i| format!("d{i}"),
                &[(
                    "actual".into(),
                    vec![Some(1.0), Some(2.0), None, Some(2.0), Some(3.0)],
                )],
                Some((2, "retrofit")),
            )
        })
        .unwrap();
        let blue_lines = shapes
            .iter()
            .filter(
                |s| matches!(s, Shape::Line { color, width: 2, .. } if *color == (31, 119, 180)),
            )
            .count();
        // Two segments and the legend's sample line.
        assert_eq!(blue_lines, 3);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_number(1234567.0), "1,234,567");
        assert_eq!(format_number(-1234.4), "-1,234");
        assert_eq!(format_number(12.345), "12.3");
        assert_eq!(format_number(0.5), "0.50");
    }
}
