//! Writes a generated checkpoint of one family (`convert::testing::FAMILIES`) for the scripts
//! that record llama.cpp's and Hugging Face's numbers on it (scripts/family-reference.sh).
//! Usage: make-family DIR FAMILY [SPM_DIR]; prints the `--tokenizer-pre` its conversion needs.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!(
            "usage: make-family DIR FAMILY [SPM_DIR]  (families: {})",
            convert::testing::FAMILIES.join(", ")
        );
        std::process::exit(2);
    }
    let spm = a
        .get(3)
        .cloned()
        .unwrap_or_else(|| "tests/data/llama2-spm".into());
    match convert::testing::write_family_checkpoint(a[1].as_ref(), &a[2], spm.as_ref()) {
        Ok(pre) => println!("{}", pre.unwrap_or("")),
        Err(e) => {
            eprintln!("make-family: {e}");
            std::process::exit(2);
        }
    }
}
