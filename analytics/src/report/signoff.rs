//! Who answers for a report version, what it cannot tell, and its
//! signatures: the responsibility and limitations block and the signature
//! lines shared by HTML, PDF and CSV, and recording a signature on a
//! stored version (`estatemon report sign`).
//!
//! A signature belongs to one version. Signing re-renders that version's
//! stored files from its own `report.json` (never from the database's data
//! as it is now, which may have changed since), with the signature added;
//! a regenerated report is the next version and is unsigned.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::model::{QuarterReport, SignRole, Signature};
use super::quarter::Quarter;
use super::tables::{Cell, Table};

/// What a printed, unsigned line shows: room to sign by hand.
pub const BLANK: &str = "____________________";

/// The sign-off table: one row per role, signed or blank.
pub fn table(r: &QuarterReport) -> Table {
    let tz: chrono_tz::Tz = r.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let rows = SignRole::ALL
        .into_iter()
        .map(|role| match r.signatures.iter().find(|s| s.role == role) {
            Some(s) => vec![
                Cell::Text(role.label().to_owned()),
                Cell::Text(s.name.clone()),
                Cell::Text(s.qualification.clone()),
                Cell::Text(
                    s.signed_at
                        .with_timezone(&tz)
                        .format("%Y-%m-%d %H:%M %:z")
                        .to_string(),
                ),
                Cell::Text(format!("recorded by {}", s.recorded_by)),
            ],
            None => vec![
                Cell::Text(role.label().to_owned()),
                Cell::Text(BLANK.into()),
                Cell::Text(BLANK.into()),
                Cell::Text(BLANK.into()),
                Cell::Text(format!(
                    "not signed: estatemon report sign --as {}",
                    role.as_str()
                )),
            ],
        })
        .collect();
    Table {
        name: "signoff",
        title: format!("Sign-off of version {}", r.version),
        headers: ["role", "name", "qualification", "date", "record"]
            .map(String::from)
            .to_vec(),
        rows,
        csv_only: false,
        note: Some(format!(
            "A signature covers version {} of {} {} only; a regenerated report is the next \
             version and is unsigned until signed again.",
            r.version, r.site_id, r.quarter
        )),
    }
}

/// "reviewed by X (date)" / "not reviewed", for the cover.
pub fn status(r: &QuarterReport) -> String {
    SignRole::ALL
        .into_iter()
        .map(|role| match r.signatures.iter().find(|s| s.role == role) {
            Some(s) => format!(
                "{} {} ({})",
                role.label().to_lowercase(),
                s.name,
                s.signed_at.format("%Y-%m-%d")
            ),
            None => format!("not signed as {}", role.as_str()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The responsibility and limitations block, one paragraph per item,
/// from this report's own figures.
pub fn responsibility(r: &QuarterReport) -> Vec<String> {
    let q = &r.data_quality;
    let provisional = r.savings.iter().filter(|s| s.provisional).count();
    let not_assessed = r
        .savings
        .iter()
        .filter(|s| s.savings_fraction.is_none())
        .count();
    vec![
        format!(
            "Responsibility: {} computed every figure of this report from the readings stored \
             for {} ({}) and from the configuration it names (the registry's meters, their \
             purposes, buildings and areas; the retrofits, their baselines and targets; tariffs \
             and emission factors). The preparer who signs below answers for that \
             configuration and for the report's fitness for its purpose; the reviewer confirms \
             an independent check of the method and of the figures against the CSV files. A \
             signature covers version {} only.",
            r.prepared_by, r.site_name, r.site_id, r.version
        ),
        format!(
            "Limitations, data: {:.1} % of the quarter's meter-hours have readings; {} of {} \
             meters have none and their use is shown as missing, not estimated. {} intervals \
             were bridged over gaps in the readings (section 6 names them) and {} intervals \
             have unknown use (implausible jumps). Counter corrections are listed in section 6.",
            q.coverage * 100.0,
            q.meters_without_data.len(),
            q.meters,
            q.gaps,
            q.implausible
        ),
        format!(
            "Limitations, savings: a saving is an estimate, the adjusted baseline (a regression \
             model) less the measured use, given with its 90 % interval; a target counts as met \
             only when the whole interval clears it. {} of {} retrofits rest on a baseline \
             shorter than CalTRACK's sufficiency rule (provisional) and {} could not be \
             assessed. No non-routine adjustment was made to any baseline: faults on a \
             retrofit's meters stay in the measured use.",
            provisional,
            r.savings.len(),
            not_assessed
        ),
        format!(
            "Limitations, money and carbon: costs apply the tariffs in section 7 to metered \
             use and are not the utility's bills; CO₂ applies the emission factors in section 7 \
             ({}).",
            r.emission_factors.source.trim_end_matches('.')
        ),
        "Limitations, alerts: an alert exists only where the rules were evaluated, live by \
         `estatemon analytics` or afterwards by `estatemon analytics replay`; section 5 says \
         over which part of the quarter they were."
            .to_owned(),
    ]
}

/// Why a signature could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no stored report for {site} {quarter}: generate it first (estatemon report --site {site} --quarter {quarter})")]
    NoReport { site: String, quarter: Quarter },
    #[error(
        "{site} {quarter} is at version {current}, not {asked}: a signature belongs to the version \
         the signer read; read version {current} and sign that"
    )]
    WrongVersion {
        site: String,
        quarter: Quarter,
        asked: i32,
        current: i32,
    },
    #[error("version {version} is already signed as {role} by {name} on {at}", role = .role.as_str())]
    AlreadySigned {
        version: i32,
        role: SignRole,
        name: String,
        at: DateTime<Utc>,
    },
    #[error("{0} is empty: a signature needs the signer's name and qualification")]
    Empty(&'static str),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// What a signer states.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub site: String,
    pub quarter: Quarter,
    pub version: i32,
    pub role: SignRole,
    pub name: String,
    pub qualification: String,
    /// Who records it: the CLI's user, or an API token's name.
    pub recorded_by: String,
}

/// SHA-256 of a version's content as generated (its JSON with no
/// signatures): the signature row names exactly what was signed.
pub fn content_digest(r: &QuarterReport) -> anyhow::Result<Vec<u8>> {
    let mut unsigned = r.clone();
    unsigned.signatures.clear();
    Ok(Sha256::digest(serde_json::to_vec(&unsigned)?).to_vec())
}

/// Records a signature on the stored current version and re-renders its
/// files with it; writes the audit log. Returns the signed report and the
/// files stored.
pub async fn sign(
    client: &mut Client,
    req: &SignRequest,
    pdf_font: &str,
) -> Result<(QuarterReport, Vec<super::store::RenderedFile>), SignError> {
    let name = req.name.trim();
    let qualification = req.qualification.trim();
    if name.is_empty() {
        return Err(SignError::Empty("--name"));
    }
    if qualification.is_empty() {
        return Err(SignError::Empty("--qualification"));
    }
    let tx = client.transaction().await.map_err(anyhow::Error::from)?;
    let quarter = req.quarter.to_string();
    let Some(row) = tx
        .query_opt(
            "SELECT r.id, r.version, f.body FROM reports r
               JOIN report_files f ON f.report_id = r.id AND f.name = 'report.json'
              WHERE r.site_id = $1 AND r.quarter = $2 FOR UPDATE OF r",
            &[&req.site, &quarter],
        )
        .await
        .map_err(anyhow::Error::from)?
    else {
        return Err(SignError::NoReport {
            site: req.site.clone(),
            quarter: req.quarter,
        });
    };
    let (id, current, body): (i64, i32, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
    if current != req.version {
        return Err(SignError::WrongVersion {
            site: req.site.clone(),
            quarter: req.quarter,
            asked: req.version,
            current,
        });
    }
    let mut report: QuarterReport = serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!("the stored report.json of version {current} cannot be read back: {e}")
    })?;
    report.pdf_font = pdf_font.to_owned();
    if let Some(s) = report.signatures.iter().find(|s| s.role == req.role) {
        return Err(SignError::AlreadySigned {
            version: current,
            role: req.role,
            name: s.name.clone(),
            at: s.signed_at,
        });
    }
    let digest = content_digest(&report)?;
    let signature = Signature {
        role: req.role,
        name: name.to_owned(),
        qualification: qualification.to_owned(),
        // Whole seconds: the date printed is the date stored.
        signed_at: DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_else(Utc::now),
        recorded_by: req.recorded_by.clone(),
    };
    tx.execute(
        "INSERT INTO report_signatures (site_id, quarter, version, role, name, qualification,
                                        signed_at, recorded_by, content_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &req.site,
            &quarter,
            &current,
            &req.role.as_str(),
            &signature.name,
            &signature.qualification,
            &signature.signed_at,
            &signature.recorded_by,
            &digest,
        ],
    )
    .await
    .map_err(anyhow::Error::from)?;
    report.signatures.push(signature);
    report.signatures.sort_by_key(|s| s.role);
    let files = super::store::render_all(&report)?;
    tx.execute(
        "UPDATE reports SET summary = $2 WHERE id = $1",
        &[&id, &super::store::summary(&report)],
    )
    .await
    .map_err(anyhow::Error::from)?;
    super::store::replace_files(&tx, id, &files)
        .await
        .map_err(anyhow::Error::from)?;
    tx.execute(
        "INSERT INTO audit_log (at, actor, role, method, path, status, detail)
         VALUES (now(), $1, NULL, 'SIGN', $2, 200, $3)",
        &[
            &req.recorded_by,
            &format!("report {} {} version {}", req.site, quarter, current),
            &format!(
                "signed as {} by {} ({}); content sha256 {}",
                req.role.as_str(),
                name,
                qualification,
                hex::encode(&digest)
            ),
        ],
    )
    .await
    .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok((report, files))
}
