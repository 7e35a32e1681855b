//! Output files that appear whole or not at all: write to a temporary file in the target
//! directory, flush and sync it, then rename it over the final name. A run that fails or is
//! interrupted leaves nothing under the final name (a killed run can leave a `.kiln-tmp`
//! file, which the next run in that directory removes).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Suffix of kiln's temporary files.
pub const TMP_SUFFIX: &str = ".kiln-tmp";

/// A file being written; [`AtomicFile::commit`] publishes it.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `dest`. Fails early when `dest` is a directory or its directory does not
    /// exist or is not writable.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        if dest.is_dir() {
            return Err(Error::format(&dest, "the output path is a directory"));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| Error::format(&dest, "the output path has no file name"))?
            .to_string_lossy()
            .into_owned();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::format(
                &dest,
                format!("the output directory {} does not exist", dir.display()),
            ));
        }
        remove_stale_temps(&dir, &name);
        let tmp = dir.join(format!(".{name}.{}{TMP_SUFFIX}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&dest, e))?;
        Ok(AtomicFile {
            dest,
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("writer used after commit")
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let dest = self.dest.clone();
        let out = self.out.take().expect("commit twice");
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&dest, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&dest, e))?;
        drop(file);
        fs::rename(&self.tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Removes temporaries of `name` left in `dir` by killed runs whose process is gone.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = f
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(TMP_SUFFIX))
        {
            let alive = pid
                .parse::<u32>()
                .map(|p| Path::new(&format!("/proc/{p}")).exists())
                .unwrap_or(false);
            if !alive {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_file(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    let p = f.path().to_path_buf();
    f.writer().write_all(bytes).map_err(|e| Error::io(&p, e))?;
    f.commit()
}
