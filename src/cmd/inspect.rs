//! `kiln inspect`.

use std::path::Path;

use anyhow::Result;

use super::human_bytes;

pub fn run(path: &Path, json: bool) -> Result<i32> {
    let ins = ::convert::inspect::inspect(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ins)?);
        return Ok(0);
    }
    println!(
        "{} ({}{})",
        ins.path,
        ins.kind,
        ins.gguf_version
            .map(|v| format!(" v{v}"))
            .unwrap_or_default()
    );
    println!("architecture: {}", ins.architecture);
    if let Some(why) = &ins.unsupported {
        println!("kiln does not run this model: {why}");
    }
    println!("\nmetadata ({} keys):", ins.metadata.len());
    for (k, v) in &ins.metadata {
        let mut s = match v {
            serde_json::Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        if s.chars().count() > 100 {
            s = s.chars().take(100).collect::<String>() + "…";
        }
        println!("  {k:<44} {s}");
    }
    println!("\ntensors ({}):", ins.tensors.len());
    println!("  {:<36} {:<8} {:>12}  shape", "name", "type", "bytes");
    for t in &ins.tensors {
        println!(
            "  {:<36} {:<8} {:>12}  {:?}",
            t.name, t.ty, t.bytes, t.shape
        );
    }
    println!(
        "\ntotal: {} parameters, {} of tensor data, file {}",
        ins.n_parameters,
        human_bytes(ins.tensor_bytes),
        human_bytes(ins.file_bytes)
    );
    if !ins.extra_tensors.is_empty() {
        println!(
            "extra tensors not used by kiln ({}): {}",
            ins.extra_tensors.len(),
            ins.extra_tensors.join(", ")
        );
    }
    if !ins.ignored_tensors.is_empty() {
        println!("ignored (no weights): {}", ins.ignored_tensors.join(", "));
    }
    Ok(0)
}
