use super::Ctx;

pub fn run(ctx: &Ctx, file: &std::path::Path) -> anyhow::Result<()> {
    let sha = hfsky::hash::sha256_file(file).map_err(|e| super::bad_input(format!("{}: {e}", file.display())))?;
    if ctx.json {
        ctx.emit_json(&serde_json::json!({ "sha256": sha }));
    } else {
        println!("{sha}  {}", file.display());
    }
    Ok(())
}
