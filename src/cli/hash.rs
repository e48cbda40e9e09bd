use super::Ctx;

pub fn run(ctx: &Ctx, file: &std::path::Path) -> anyhow::Result<()> {
    let sha = hfsky::hash::sha256_file(file).map_err(|e| super::bad_input(format!("{}: {e}", file.display())))?;
    if ctx.json {
        #[derive(serde::Serialize)]
        struct HashJson {
            sha256: String,
        }
        ctx.emit_json(&HashJson { sha256: sha });
    } else {
        println!("{sha}  {}", file.display());
    }
    Ok(())
}
