//! The report as PDF (A4), written with pdf-writer: the same tables and the
//! same charts as the HTML page — the charts are the shapes plotters drew
//! into [`super::charts::Recorder`], replayed as PDF paths. Text is set in
//! an embedded CJK-capable font when one is found, else in Helvetica
//! ([`super::font`]).

use pdf_writer::{Content, Name, Pdf, Rect, Ref};

use super::font::Text;

use super::charts::{record, Shape, HEIGHT, WIDTH};
use super::figures::{chart_specs, ChartSpec};
use super::model::QuarterReport;
use super::tables::{tables, Cell, Table};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 40.0;
const TEXT_W: f32 = PAGE_W - 2.0 * MARGIN;

struct Writer {
    pages: Vec<Vec<u8>>,
    content: Content,
    y: f32,
    text: Text,
}

impl Writer {
    fn new(text: Text) -> Writer {
        Writer {
            pages: Vec::new(),
            content: Content::new(),
            y: PAGE_H - MARGIN,
            text,
        }
    }

    fn width(&self, s: &str, size: f32, bold: bool) -> f32 {
        self.text.width(s, size, bold)
    }

    fn new_page(&mut self) {
        let done = std::mem::replace(&mut self.content, Content::new());
        self.pages.push(done.finish().into_vec());
        self.y = PAGE_H - MARGIN;
    }

    fn ensure(&mut self, height: f32) {
        if self.y - height < MARGIN {
            self.new_page();
        }
    }

    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        self.content.begin_text().next_line(x, y);
        self.text.show(&mut self.content, size, bold, s);
        self.content.end_text();
    }

    fn paragraph(&mut self, s: &str, size: f32, bold: bool) {
        let lines = wrap_words(s, |line| self.width(line, size, bold) <= TEXT_W);
        for l in lines {
            self.ensure(size * 1.4);
            self.y -= size * 1.4;
            self.text(MARGIN, self.y, size, bold, &l);
        }
        self.y -= size * 0.4;
    }

    /// A table across the text width. Headers wrap at spaces and long
    /// text cells wrap too (at most [`MAX_COLUMN_CHARS`] a line), so that
    /// wide tables keep a readable size (8 pt when they fit, never under
    /// 6 pt) instead of shrinking to fit one line per row.
    fn table(&mut self, t: &Table) {
        // Only absurd cells are cut; headlines and notes wrap.
        const MAX_CHARS: usize = 600;
        const MAX_COLUMN_CHARS: usize = 22;
        let clip = |s: String| {
            if s.chars().count() > MAX_CHARS {
                format!("{}...", s.chars().take(MAX_CHARS - 3).collect::<String>())
            } else {
                s
            }
        };
        let rows: Vec<Vec<(String, bool)>> = t
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| (clip(c.display()), c.is_numeric()))
                    .collect()
            })
            .collect();
        let longest_word = |s: &str| {
            s.split_whitespace()
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(1)
        };
        let chars: Vec<usize> = (0..t.headers.len())
            .map(|i| {
                let cells = rows
                    .iter()
                    .map(|r| {
                        let n = r[i].0.chars().count();
                        // Numbers never wrap; text wraps past the cap.
                        if r[i].1 {
                            n
                        } else {
                            n.min(MAX_COLUMN_CHARS).max(longest_word(&r[i].0))
                        }
                    })
                    .max()
                    .unwrap_or(1);
                cells.max(longest_word(&t.headers[i])).max(1)
            })
            .collect();
        let cells: Vec<Vec<(Vec<String>, bool)>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&chars)
                    .map(|((text, numeric), c)| {
                        let lines = if *numeric {
                            vec![text.clone()]
                        } else {
                            wrap(text, *c)
                        };
                        (lines, *numeric)
                    })
                    .collect()
            })
            .collect();
        let pad = 4.0;
        // Measured at a size: each column as wide as its widest cell line
        // or the widest word of its (bold) header.
        let measure = |size: f32| -> Vec<f32> {
            (0..t.headers.len())
                .map(|i| {
                    let cell = cells
                        .iter()
                        .flat_map(|r| r[i].0.iter())
                        .map(|l| self.width(l, size, false))
                        .fold(0.0_f32, f32::max);
                    let head = t.headers[i]
                        .split_whitespace()
                        .map(|w| self.width(w, size, true))
                        .fold(0.0_f32, f32::max);
                    cell.max(head) + pad
                })
                .collect()
        };
        let mut size = 8.0;
        let mut widths = measure(size);
        while widths.iter().sum::<f32>() > TEXT_W && size > 6.0 {
            size -= 0.25;
            widths = measure(size);
        }
        // Spread what is left: first to the columns whose text wrapped (up
        // to their unwrapped width), then evenly, so headers wrap less.
        let natural: Vec<f32> = (0..t.headers.len())
            .map(|i| {
                let cell = rows
                    .iter()
                    .map(|r| self.width(&r[i].0, size, false))
                    .fold(0.0_f32, f32::max);
                cell.max(self.width(&t.headers[i], size, true)) + pad
            })
            .collect();
        let mut spare = (TEXT_W - widths.iter().sum::<f32>()).max(0.0);
        let deficit: f32 = natural
            .iter()
            .zip(&widths)
            .map(|(n, w)| (n - w).max(0.0))
            .sum();
        if deficit > 0.0 {
            let share = (spare / deficit).min(1.0);
            for (w, n) in widths.iter_mut().zip(&natural) {
                let give = (n - *w).max(0.0) * share;
                *w += give;
                spare -= give;
            }
        }
        let n = widths.len().max(1) as f32;
        let widths: Vec<f32> = widths.iter().map(|w| w + spare.max(0.0) / n).collect();
        // Text wrapped again, now to the columns' widths in points.
        let cells: Vec<Vec<(Vec<String>, bool)>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&widths)
                    .map(|((text, numeric), w)| {
                        let lines = if *numeric {
                            vec![text.clone()]
                        } else {
                            non_empty(wrap_words(text, |l| self.width(l, size, false) <= w - pad))
                        };
                        (lines, *numeric)
                    })
                    .collect()
            })
            .collect();
        let header: Vec<Vec<String>> = t
            .headers
            .iter()
            .zip(&widths)
            .map(|(h, w)| non_empty(wrap_words(h, |l| self.width(l, size, true) <= w - pad)))
            .collect();
        let line_h = size * 1.3;
        let header_lines = header.iter().map(Vec::len).max().unwrap_or(1);
        // A key/value table (the cover) has no header row.
        let headless = t.headers.iter().all(|h| h.is_empty());
        self.paragraph(&t.title, 10.0, true);
        let draw_header = |w: &mut Writer| {
            if headless {
                return;
            }
            let h = line_h * header_lines as f32 + size * 0.4;
            w.ensure(h + line_h * 2.0);
            w.y -= h;
            let mut x = MARGIN;
            for (lines, wd) in header.iter().zip(&widths) {
                for (k, line) in lines.iter().enumerate() {
                    let y = w.y + size * 0.4 + line_h * (header_lines - 1 - k) as f32;
                    w.text(x + 1.0, y, size, true, line);
                }
                x += wd;
            }
            w.content
                .set_stroke_rgb(0.6, 0.6, 0.6)
                .set_line_width(0.5)
                .move_to(MARGIN, w.y)
                .line_to(MARGIN + widths.iter().sum::<f32>(), w.y)
                .stroke();
        };
        draw_header(self);
        if cells.is_empty() {
            // Why the table is empty, wrapped to the text width.
            self.paragraph(
                t.note.as_deref().unwrap_or("none this quarter"),
                size,
                false,
            );
        }
        for row in &cells {
            let lines = row.iter().map(|(l, _)| l.len()).max().unwrap_or(1);
            let row_h = line_h * lines as f32 + size * 0.25;
            if self.y - row_h < MARGIN {
                self.new_page();
                draw_header(self);
            }
            self.y -= row_h;
            let top = self.y + row_h - line_h;
            let mut x = MARGIN;
            for ((lines, numeric), wd) in row.iter().zip(&widths) {
                for (k, text) in lines.iter().enumerate() {
                    let missing = text == "missing";
                    if missing {
                        self.content.set_fill_rgb(0.78, 0.16, 0.16);
                    }
                    let tx = if *numeric {
                        x + wd - pad / 2.0 - self.width(text, size, false)
                    } else {
                        x + 1.0
                    };
                    self.text(tx, top + size * 0.25 - line_h * k as f32, size, false, text);
                    if missing {
                        self.content.set_fill_rgb(0.0, 0.0, 0.0);
                    }
                }
                x += wd;
            }
        }
        self.y -= line_h;
        if let Some(note) = t.note.as_deref().filter(|_| !cells.is_empty()) {
            self.paragraph(note, 8.0, false);
        }
    }

    fn chart(&mut self, spec: &ChartSpec) {
        let shapes = match record(|root| spec.draw(root)) {
            Ok(s) => s,
            Err(e) => {
                self.paragraph(&format!("chart not drawn: {e}"), 8.0, false);
                return;
            }
        };
        let scale = TEXT_W / WIDTH as f32;
        let height = HEIGHT as f32 * scale;
        self.ensure(height + 8.0);
        let top = self.y - 4.0;
        let (x0, y0) = (MARGIN, top);
        let pt = |p: (i32, i32)| (x0 + p.0 as f32 * scale, y0 - p.1 as f32 * scale);
        let rgb = |c: (u8, u8, u8)| (c.0 as f32 / 255.0, c.1 as f32 / 255.0, c.2 as f32 / 255.0);
        // Translucent strokes and fills (plotters' light mesh, the legend
        // box) blended onto the white page.
        let blend = |c: (u8, u8, u8), alpha: f64| {
            let a = alpha.clamp(0.0, 1.0) as f32;
            let (r, g, b) = rgb(c);
            (1.0 - a + a * r, 1.0 - a + a * g, 1.0 - a + a * b)
        };
        for s in &shapes {
            match s {
                Shape::Line {
                    points,
                    color,
                    alpha,
                    width,
                } if points.len() >= 2 => {
                    let (r, g, b) = blend(*color, *alpha);
                    self.content
                        .set_stroke_rgb(r, g, b)
                        .set_line_width(*width as f32 * scale);
                    let (x, y) = pt(points[0]);
                    self.content.move_to(x, y);
                    for p in &points[1..] {
                        let (x, y) = pt(*p);
                        self.content.line_to(x, y);
                    }
                    self.content.stroke();
                }
                Shape::Line { .. } => {}
                Shape::Rect {
                    from,
                    to,
                    color,
                    alpha,
                    fill,
                } => {
                    let (r, g, b) = blend(*color, *alpha);
                    let (ax, ay) = pt(*from);
                    let (bx, by) = pt(*to);
                    let (x, y, w, h) = (ax.min(bx), ay.min(by), (bx - ax).abs(), (by - ay).abs());
                    if *fill {
                        self.content
                            .set_fill_rgb(r, g, b)
                            .rect(x, y, w, h)
                            .fill_nonzero();
                    } else {
                        self.content
                            .set_stroke_rgb(r, g, b)
                            .set_line_width(0.5)
                            .rect(x, y, w, h)
                            .stroke();
                    }
                }
                Shape::Polygon {
                    points,
                    color,
                    alpha,
                } if points.len() >= 3 => {
                    let (r, g, b) = blend(*color, *alpha);
                    self.content.set_fill_rgb(r, g, b);
                    let (x, y) = pt(points[0]);
                    self.content.move_to(x, y);
                    for p in &points[1..] {
                        let (x, y) = pt(*p);
                        self.content.line_to(x, y);
                    }
                    self.content.close_path().fill_nonzero();
                }
                Shape::Polygon { .. } => {}
                Shape::Circle {
                    center,
                    radius,
                    color,
                    fill,
                } => {
                    let (r, g, b) = rgb(*color);
                    let (cx, cy) = pt(*center);
                    let rad = *radius as f32 * scale;
                    self.content.move_to(cx + rad, cy);
                    for k in 1..=12 {
                        let a = k as f32 * std::f32::consts::TAU / 12.0;
                        self.content.line_to(cx + rad * a.cos(), cy + rad * a.sin());
                    }
                    self.content.close_path();
                    if *fill {
                        self.content.set_fill_rgb(r, g, b).fill_nonzero();
                    } else {
                        self.content.set_stroke_rgb(r, g, b).stroke();
                    }
                }
                Shape::Text {
                    text,
                    at,
                    size,
                    color,
                    h,
                    v,
                    vertical,
                } => {
                    let size = (*size as f32) * scale;
                    let w = self.width(text, size, false);
                    let (x, y) = pt(*at);
                    let dx = match h {
                        -1 => 0.0,
                        0 => -w / 2.0,
                        _ => -w,
                    };
                    let dy = match v {
                        -1 => -size * 0.8,
                        0 => -size * 0.35,
                        _ => size * 0.2,
                    };
                    let (r, g, b) = rgb(*color);
                    let matrix = if *vertical {
                        [0.0, 1.0, -1.0, 0.0, x - dy, y + dx]
                    } else {
                        [1.0, 0.0, 0.0, 1.0, x + dx, y + dy]
                    };
                    self.content
                        .set_fill_rgb(r, g, b)
                        .begin_text()
                        .set_text_matrix(matrix);
                    self.text.show(&mut self.content, size, false, text);
                    self.content.end_text();
                }
            }
        }
        self.content.set_fill_rgb(0.0, 0.0, 0.0);
        self.y = top - height - 8.0;
    }

    /// The document, every page with `footer` + "n of N" at its foot.
    fn finish(mut self, footer: &str) -> Vec<u8> {
        self.new_page();
        let total = self.pages.len();
        // Each page's foot is a second content stream, written once the
        // page count is known (and before the font is subset, so that its
        // glyphs are in the subset).
        let feet: Vec<Vec<u8>> = (0..total)
            .map(|i| {
                let line = format!("{footer}{} of {total}", i + 1);
                let size = 7.5;
                let x = (PAGE_W - self.width(&line, size, false)) / 2.0;
                let mut c = Content::new();
                c.set_fill_rgb(0.35, 0.35, 0.35);
                c.begin_text().next_line(x.max(MARGIN), MARGIN / 2.0);
                self.text.show(&mut c, size, false, &line);
                c.end_text();
                c.finish().into_vec()
            })
            .collect();
        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let n = total as i32;
        let page_ids: Vec<Ref> = (0..n).map(|i| Ref::new(10 + 3 * i)).collect();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree).kids(page_ids.iter().copied()).count(n);
        // Font objects after the pages.
        let fonts = self.text.write(&mut pdf, 10 + 3 * n);
        for (i, body) in self.pages.iter().enumerate() {
            let id = page_ids[i];
            let content_id = Ref::new(11 + 3 * i as i32);
            let foot_id = Ref::new(12 + 3 * i as i32);
            {
                let mut page = pdf.page(id);
                page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
                page.parent(tree);
                page.insert(Name(b"Contents"))
                    .array()
                    .items([content_id, foot_id]);
                let mut resources = page.resources();
                let mut dict = resources.fonts();
                for (name, font) in &fonts {
                    dict.pair(Name(name), *font);
                }
            }
            pdf.stream(content_id, body);
            pdf.stream(foot_id, &feet[i]);
        }
        pdf.finish()
    }
}

/// The whole report as a PDF document.
pub fn render(r: &QuarterReport) -> Vec<u8> {
    let specs = chart_specs(r);
    let tabs = tables(r);
    let table = |name: &str| tabs.iter().find(|t| t.name == name && !t.csv_only);
    let font = super::font::find(&r.pdf_font)
        .ok()
        .flatten()
        .or_else(|| super::font::find("").ok().flatten());
    let mut w = Writer::new(Text::new(font));
    w.paragraph(
        &format!("{}: quarterly energy report {}", r.site_name, r.quarter),
        16.0,
        true,
    );
    if let Some(t) = table("cover") {
        w.table(t);
    }
    let key = Table {
        name: "key_figures",
        title: "Key figures of the quarter".into(),
        headers: vec!["figure".into(), "value".into()],
        rows: super::narrative::key_figures(r)
            .into_iter()
            .map(|(label, value)| vec![Cell::Text(label), Cell::Text(value)])
            .collect(),
        csv_only: false,
        note: None,
    };
    w.table(&key);
    for n in &r.notes {
        w.paragraph(&format!("Note: {n}"), 8.0, false);
    }
    // (heading, tables, which charts)
    type Section<'a> = (&'a str, &'a [&'a str], fn(&ChartSpec) -> bool);
    let sections: [Section; 6] = [
        (
            "1. Consumption",
            &["totals", "comparison", "intensity", "weather", "monthly"],
            |s| matches!(s, ChartSpec::Bars { .. }),
        ),
        ("2. Demand", &["demand"], |s| {
            s.title().contains("load profile")
        }),
        (
            "3. Savings (IPMVP, ASHRAE Guideline 14; the method is in section 7)",
            &[
                "savings_summary",
                "savings_headlines",
                "savings_models",
                "savings_model_terms",
                "savings_uncertainty_inputs",
                "non_routine_events",
                "savings",
                "savings_value",
            ],
            |s| s.title().contains("baseline model"),
        ),
        (
            "4. Lifts and access gates",
            &[
                "lifts",
                "lift_replacements",
                "entrapments",
                "inspections",
                "inspection_exceptions",
                "gates",
            ],
            |_| false,
        ),
        ("5. Alerts", &["alerts"], |_| false),
        ("6. Data quality", &["data_quality"], |_| false),
    ];
    for (title, names, charts) in sections {
        w.ensure(60.0);
        w.y -= 8.0;
        w.paragraph(title, 13.0, true);
        for spec in specs.iter().filter(|s| charts(s)) {
            w.chart(spec);
        }
        for name in names {
            if let Some(t) = table(name) {
                w.table(t);
            }
        }
    }
    w.ensure(60.0);
    w.y -= 8.0;
    w.paragraph("7. Methodology, tariffs and emission factors", 13.0, true);
    for p in super::narrative::methodology(r) {
        w.paragraph(&p, 9.0, false);
    }
    for name in ["tariffs", "emission_factors"] {
        if let Some(t) = table(name) {
            w.table(t);
        }
    }
    w.paragraph(
        &format!("Emission factors: {}", r.emission_factors.source),
        8.0,
        false,
    );
    w.ensure(60.0);
    w.y -= 8.0;
    w.paragraph("8. Responsibility, limitations and sign-off", 13.0, true);
    for p in super::signoff::responsibility(r) {
        w.paragraph(&p, 9.0, false);
    }
    if let Some(t) = table("signoff") {
        // The signature lines stay on one page with their heading.
        w.ensure(140.0);
        w.table(t);
    }
    w.finish(&super::html::footer_prefix(r))
}

/// Greedy word wrap: words join a line while `fits` accepts it (a word
/// that fits nowhere stands alone on its line). No text, no lines.
fn wrap_words(text: &str, fits: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && !fits(&candidate) {
            lines.push(std::mem::replace(&mut line, word.to_owned()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Lines of at most `width` characters; one empty line for no text.
fn wrap(text: &str, width: usize) -> Vec<String> {
    non_empty(wrap_words(text, |l| l.chars().count() <= width))
}

fn non_empty(mut lines: Vec<String>) -> Vec<String> {
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_wrap_to_the_width() {
        assert_eq!(
            wrap("NMBE (out of sample)", 8),
            ["NMBE", "(out of", "sample)"]
        );
        assert_eq!(wrap("short", 20), ["short"]);
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(wrap("extraordinarily long", 5), ["extraordinarily", "long"]);
    }
}
