//! Benchmark support: [`gen`], a seeded generator of Internet-background-
//! radiation-like captures that also writes their ground truth.

pub mod gen;
pub mod scenarios;
pub mod synth;

/// The `<id>.token` files of a directory as (id, token), sorted by id: the
/// credentials that `darkscope-aggregator sensor add` (or the feed bench)
/// wrote for the load generators.
pub fn read_tokens(dir: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".token")?.to_string();
            let tok = std::fs::read_to_string(e.path()).ok()?.trim().to_string();
            Some((id, tok))
        })
        .collect();
    v.sort();
    Ok(v)
}
