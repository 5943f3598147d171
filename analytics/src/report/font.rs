//! The PDF's text: an embedded TrueType/OpenType font when one with
//! Chinese glyphs is found (so 第一座 prints as itself and can be copied or
//! searched), else the standard Helvetica (WinAnsi; Chinese as `?`).
//!
//! The embedded font is subset to the glyphs the report uses (typst's
//! `subsetter`), written as a Type 0 font with Identity-H encoding (two
//! bytes a glyph), its advances in `/W` and a ToUnicode map for text
//! extraction. Bold is drawn as fill + stroke (most CJK fonts have no
//! bold face). Widths come from the font's own `hmtx`, so table columns
//! and right-aligned numbers are measured, not estimated.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, TextRenderingMode, UnicodeCmap};
use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str};

/// Debian's CJK fonts, in the order they are looked for (packages
/// `fonts-wqy-microhei`, `fonts-wqy-zenhei`, `fonts-droid-fallback`).
pub const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
];

/// A font file read once per process and kept for its life (a few MB).
pub struct FontFile {
    pub path: PathBuf,
    data: &'static [u8],
}

/// The configured font, or the first candidate present. `Err` names a
/// configured font that cannot be used (the caller falls back and says so).
pub fn find(configured: &str) -> Result<Option<&'static FontFile>, String> {
    type Found = Result<Option<&'static FontFile>, String>;
    static CACHE: OnceLock<Mutex<HashMap<String, Found>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(configured.to_owned())
        .or_insert_with(|| {
            if configured.is_empty() {
                Ok(CANDIDATES.iter().find_map(|p| load(Path::new(p)).ok()))
            } else {
                load(Path::new(configured)).map(Some)
            }
        })
        .clone()
}

fn load(path: &Path) -> Result<&'static FontFile, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let face = ttf_parser::Face::parse(&data, 0)
        .map_err(|e| format!("{}: not a usable font ({e})", path.display()))?;
    if face.glyph_index('中').is_none() || face.glyph_index('A').is_none() {
        return Err(format!(
            "{}: has no Chinese or no Latin glyphs",
            path.display()
        ));
    }
    // Refuse what the subsetter cannot cut, rather than a broken PDF later.
    let mut probe = subsetter::GlyphRemapper::new();
    probe.remap(face.glyph_index('中').map_or(0, |g| g.0));
    subsetter::subset(&data, 0, &probe)
        .map_err(|e| format!("{}: cannot be subset ({e:?})", path.display()))?;
    let data: &'static [u8] = Box::leak(data.into_boxed_slice());
    Ok(Box::leak(Box::new(FontFile {
        path: path.to_owned(),
        data,
    })))
}

/// How the PDF's text is set.
pub enum Text {
    /// Helvetica and Helvetica-Bold, WinAnsi; nothing embedded.
    Standard,
    Embedded(Box<Embedded>),
}

pub struct Embedded {
    file: &'static FontFile,
    face: ttf_parser::Face<'static>,
    remapper: subsetter::GlyphRemapper,
    /// New glyph id → (the text it stands for, advance in font units).
    used: BTreeMap<u16, (String, u16)>,
    per_em: f32,
}

impl Text {
    pub fn new(file: Option<&'static FontFile>) -> Text {
        match file.and_then(|f| {
            ttf_parser::Face::parse(f.data, 0)
                .ok()
                .map(|face| (f, face))
        }) {
            Some((file, face)) => Text::Embedded(Box::new(Embedded {
                file,
                per_em: face.units_per_em() as f32,
                face,
                remapper: subsetter::GlyphRemapper::new(),
                used: BTreeMap::new(),
            })),
            None => Text::Standard,
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Text::Embedded(_))
    }

    /// Width of `s` at `size` points.
    pub fn width(&self, s: &str, size: f32, bold: bool) -> f32 {
        match self {
            Text::Standard => helvetica_width(s, size, bold),
            Text::Embedded(e) => {
                let units: f32 = s
                    .chars()
                    .flat_map(|c| e.glyphs_of(c))
                    .map(|(g, _)| e.face.glyph_hor_advance(g).unwrap_or(0) as f32)
                    .sum();
                // Synthetic bold widens each glyph by its stroke.
                let extra = if bold {
                    0.02 * s.chars().count() as f32
                } else {
                    0.0
                };
                (units / e.per_em + extra) * size
            }
        }
    }

    /// Shows `s` at the current text position: selects the font (and the
    /// synthetic bold) and writes the encoded string.
    pub fn show(&mut self, content: &mut Content, size: f32, bold: bool, s: &str) {
        match self {
            Text::Standard => {
                content
                    .set_font(Name(if bold { b"F2" } else { b"F1" }), size)
                    .show(Str(&win_ansi(s)));
            }
            Text::Embedded(e) => {
                if bold {
                    // Bold text is black (headings and headers): its
                    // outline must not take a chart's last stroke colour.
                    content
                        .set_text_rendering_mode(TextRenderingMode::FillStroke)
                        .set_stroke_rgb(0.0, 0.0, 0.0)
                        .set_line_width(size * 0.04);
                } else {
                    content.set_text_rendering_mode(TextRenderingMode::Fill);
                }
                let bytes = e.encode(s);
                content.set_font(Name(b"F3"), size).show(Str(&bytes));
            }
        }
    }

    /// Writes the fonts into the document from `first` on; returns the
    /// resource names and their objects for every page.
    pub fn write(self, pdf: &mut Pdf, first: i32) -> Vec<(&'static [u8], Ref)> {
        match self {
            Text::Standard => {
                let (regular, bold) = (Ref::new(first), Ref::new(first + 1));
                pdf.type1_font(regular)
                    .base_font(Name(b"Helvetica"))
                    .encoding_predefined(Name(b"WinAnsiEncoding"));
                pdf.type1_font(bold)
                    .base_font(Name(b"Helvetica-Bold"))
                    .encoding_predefined(Name(b"WinAnsiEncoding"));
                vec![(b"F1", regular), (b"F2", bold)]
            }
            Text::Embedded(e) => {
                let r = Ref::new(first);
                e.write(pdf, first);
                vec![(b"F3", r)]
            }
        }
    }
}

impl Embedded {
    /// The glyphs that draw `c`: its own, else a transliteration (CO₂ →
    /// CO2 where the font lacks ₂), else `?`.
    fn glyphs_of(&self, c: char) -> Vec<(ttf_parser::GlyphId, char)> {
        if let Some(g) = self.face.glyph_index(c) {
            return vec![(g, c)];
        }
        let fallback = String::from_utf8_lossy(&win_ansi(&c.to_string())).into_owned();
        fallback
            .chars()
            .map(|f| {
                let f = if f.is_ascii() { f } else { '?' };
                (
                    self.face.glyph_index(f).unwrap_or(ttf_parser::GlyphId(0)),
                    f,
                )
            })
            .collect()
    }

    fn encode(&mut self, s: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len() * 2);
        for c in s.chars() {
            for (g, shown) in self.glyphs_of(c) {
                let new = self.remapper.remap(g.0);
                let advance = self.face.glyph_hor_advance(g).unwrap_or(0);
                self.used
                    .entry(new)
                    .or_insert_with(|| (shown.to_string(), advance));
                out.extend_from_slice(&new.to_be_bytes());
            }
        }
        out
    }

    fn write(self, pdf: &mut Pdf, first: i32) {
        let type0 = Ref::new(first);
        let cid = Ref::new(first + 1);
        let descriptor = Ref::new(first + 2);
        let cmap_ref = Ref::new(first + 3);
        let file_ref = Ref::new(first + 4);
        let cff = self.face.tables().cff.is_some();
        let ps_name = self
            .face
            .names()
            .into_iter()
            .find(|n| n.name_id == ttf_parser::name_id::POST_SCRIPT_NAME)
            .and_then(|n| n.to_string())
            .unwrap_or_else(|| "Embedded".into());
        let ps_name: String = ps_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        // A subset's name carries a six-letter tag.
        let base = format!("ESTMON+{ps_name}");
        let system = SystemInfo {
            registry: Str(b"Adobe"),
            ordering: Str(b"Identity"),
            supplement: 0,
        };
        let scale = 1000.0 / self.per_em;
        pdf.type0_font(type0)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"Identity-H"))
            .descendant_font(cid)
            .to_unicode(cmap_ref);
        {
            let mut font = pdf.cid_font(cid);
            font.subtype(if cff {
                CidFontType::Type0
            } else {
                CidFontType::Type2
            })
            .base_font(Name(base.as_bytes()))
            .system_info(system)
            .font_descriptor(descriptor)
            .default_width(0.0);
            if !cff {
                font.cid_to_gid_map_predefined(Name(b"Identity"));
            }
            let mut widths = font.widths();
            for (gid, (_, advance)) in &self.used {
                widths.consecutive(*gid, [*advance as f32 * scale]);
            }
        }
        let bbox = self.face.global_bounding_box();
        let descriptor_flags = FontFlags::SYMBOLIC;
        let mut fd = pdf.font_descriptor(descriptor);
        fd.name(Name(base.as_bytes()))
            .flags(descriptor_flags)
            .bbox(Rect::new(
                bbox.x_min as f32 * scale,
                bbox.y_min as f32 * scale,
                bbox.x_max as f32 * scale,
                bbox.y_max as f32 * scale,
            ))
            .italic_angle(0.0)
            .ascent(self.face.ascender() as f32 * scale)
            .descent(self.face.descender() as f32 * scale)
            .cap_height(self.face.capital_height().unwrap_or(self.face.ascender()) as f32 * scale)
            .stem_v(80.0);
        if cff {
            fd.font_file3(file_ref);
        } else {
            fd.font_file2(file_ref);
        }
        drop(fd);
        let mut cmap = UnicodeCmap::new(Name(b"Estatemon-UCS"), system);
        for (gid, (text, _)) in &self.used {
            cmap.pair_with_multiple(*gid, text.chars());
        }
        let cmap = cmap.finish();
        pdf.cmap(cmap_ref, &cmap);
        // Only the glyphs used (`load` checked that this font can be cut).
        let subset = subsetter::subset(self.file.data, 0, &self.remapper).unwrap_or_else(|e| {
            tracing::warn!(font = %self.file.path.display(), error = %e, "font subsetting failed");
            Vec::new()
        });
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&subset, 6);
        let mut stream = pdf.stream(file_ref, &packed);
        stream.filter(Filter::FlateDecode);
        if cff {
            stream.pair(Name(b"Subtype"), Name(b"OpenType"));
        } else {
            stream.pair(Name(b"Length1"), subset.len() as i32);
        }
    }
}

/// Text as WinAnsi bytes.
pub fn win_ansi(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' '..='~' => out.push(c as u8),
            '€' => out.push(0x80),
            '…' => out.push(0x85),
            '–' => out.push(0x96),
            '—' => out.push(0x97),
            '’' => out.push(0x92),
            '‘' => out.push(0x91),
            '“' => out.push(0x93),
            '”' => out.push(0x94),
            '₂' => out.push(b'2'),
            '³' => out.push(0xB3),
            '≤' => out.extend_from_slice(b"<="),
            '≥' => out.extend_from_slice(b">="),
            '\u{a0}'..='\u{ff}' => out.push(c as u32 as u8),
            _ => out.push(b'?'),
        }
    }
    out
}

/// Approximate width of `s` in Helvetica (or Helvetica-Bold) at `size`:
/// per-class advances from the fonts' metrics, rounded up.
fn helvetica_width(s: &str, size: f32, bold: bool) -> f32 {
    let em: f32 = s
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.28,
            ' ' | '(' | ')' | '[' | ']' | '-' | 'f' | 't' | 'r' => 0.34,
            'm' | 'w' => 0.86,
            'M' | 'W' => 0.92,
            '%' => 0.9,
            c if c.is_ascii_uppercase() => 0.72,
            c if c.is_ascii_digit() => 0.56,
            c if c.is_ascii_lowercase() => 0.56,
            // WinAnsi prints one `?` per character it lacks.
            _ => 0.62,
        })
        .sum();
    em * size * if bold { 1.08 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_ansi_keeps_what_helvetica_can_print() {
        assert_eq!(
            win_ansi("CO₂ m³ ±5 % – ok"),
            b"CO2 m\xb3 \xb15 % \x96 ok".to_vec()
        );
        assert_eq!(win_ansi("≤ 15 %"), b"<= 15 %".to_vec());
        assert_eq!(win_ansi("設備"), b"??".to_vec());
    }

    #[test]
    fn a_configured_font_that_is_not_a_font_is_refused_with_its_path() {
        let path = std::env::temp_dir().join(format!("not-a-font-{}.ttf", std::process::id()));
        std::fs::write(&path, b"hello").unwrap();
        let e = match find(path.to_str().unwrap()) {
            Err(e) => e,
            Ok(_) => panic!("a text file was taken for a font"),
        };
        assert!(e.contains("not-a-font"), "{e}");
        let _ = std::fs::remove_file(&path);
        assert!(find("/nonexistent/font.ttf").is_err());
    }

    /// With a CJK font installed (scripts/test.sh installs
    /// fonts-wqy-microhei), Chinese has glyphs and widths of its own.
    #[test]
    fn the_embedded_font_measures_chinese_and_latin() {
        let Ok(Some(file)) = find("") else {
            panic!(
                "no CJK font: install one of {CANDIDATES:?} (scripts/test.sh installs fonts-wqy-microhei)"
            );
        };
        let mut text = Text::new(Some(file));
        assert!(text.is_embedded());
        let wide = text.width("第一座", 10.0, false);
        let narrow = text.width("abc", 10.0, false);
        assert!(wide > 25.0 && wide <= 31.0, "{wide}");
        assert!(narrow > 10.0 && narrow < 25.0, "{narrow}");
        let Text::Embedded(e) = &mut text else {
            unreachable!()
        };
        let bytes = e.encode("座A座");
        assert_eq!(bytes.len(), 6);
        assert_eq!(bytes[0..2], bytes[4..6], "one glyph, one id");
        assert_eq!(e.used.len(), 2);
    }
}
