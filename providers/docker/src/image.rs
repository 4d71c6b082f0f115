//! The worker image: named by the operator, or imported from this
//! machine's own files.
//!
//! Why import rather than build from a base image: no registry can be
//! assumed reachable (air-gapped CI fleets, this project's own test
//! machines), and the agent plus a shell and its libraries is all a worker
//! needs to run shell jobs. The image is tagged with a hash of its contents,
//! so a new agent binary gets a new image and an unchanged one is reused.

use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// Where the agent binary sits inside an imported image.
pub const AGENT_PATH: &str = "/ebbtide";

/// The repository name of imported images.
const REPOSITORY: &str = "ebbtide-agent";

/// Where worker containers get their image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An image that already exists on the engine; it must have the agent
    /// at [`AGENT_PATH`].
    Named(String),
    /// Import one from local files: the agent binary, the tools jobs may
    /// call (at their own paths), and the shared libraries they all load.
    Import {
        /// The `ebbtide` binary.
        agent: PathBuf,
        /// Programs to include (`/bin/sh` at least).
        tools: Vec<PathBuf>,
    },
}

impl ImageSource {
    /// The default import: this binary and a POSIX shell with a few tools.
    pub fn import_default(agent: PathBuf) -> ImageSource {
        ImageSource::Import {
            agent,
            tools: [
                "/bin/sh",
                "/bin/sleep",
                "/bin/cat",
                "/bin/date",
                "/bin/echo",
                "/bin/true",
                "/bin/false",
                "/usr/bin/env",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

/// Makes sure the image exists and returns its reference.
pub(crate) async fn ensure(docker: &Docker, source: &ImageSource) -> Result<String, String> {
    match source {
        ImageSource::Named(name) => {
            docker
                .inspect_image(name)
                .await
                .map_err(|e| format!("image {name}: {e}"))?;
            Ok(name.clone())
        }
        ImageSource::Import { agent, tools } => {
            let files = collect(agent, tools).await?;
            let tag = content_tag(&files);
            let reference = format!("{REPOSITORY}:{tag}");
            if docker.inspect_image(&reference).await.is_ok() {
                return Ok(reference);
            }
            let archive = tokio::task::spawn_blocking(move || archive(&files))
                .await
                .map_err(|e| format!("archiving the image: {e}"))??;
            let mut progress = docker.create_image(
                Some(CreateImageOptions {
                    from_src: Some("-".into()),
                    repo: Some(REPOSITORY.into()),
                    tag: Some(tag.clone()),
                    ..Default::default()
                }),
                Some(bollard::body_full(archive.into())),
                None,
            );
            while let Some(step) = progress.next().await {
                let info = step.map_err(|e| format!("importing {reference}: {e}"))?;
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("importing {reference}: {err}"));
                }
            }
            tracing::info!(image = %reference, "worker image imported from local files");
            Ok(reference)
        }
    }
}

/// One file of the image: where it goes and what it holds.
struct File {
    path: String,
    bytes: Vec<u8>,
}

/// The agent, the tools and every library they load (from `ldd`).
async fn collect(agent: &Path, tools: &[PathBuf]) -> Result<Vec<File>, String> {
    let mut wanted: Vec<(String, PathBuf)> = vec![(AGENT_PATH.into(), agent.to_path_buf())];
    for t in tools {
        wanted.push((t.display().to_string(), t.clone()));
    }
    let mut libraries = std::collections::BTreeSet::new();
    for (_, source) in &wanted {
        for lib in shared_libraries(source).await? {
            libraries.insert(lib);
        }
    }
    for lib in libraries {
        wanted.push((lib.clone(), PathBuf::from(lib)));
    }
    let mut files = Vec::with_capacity(wanted.len());
    for (path, source) in wanted {
        let bytes = tokio::fs::read(&source)
            .await
            .map_err(|e| format!("{}: {e}", source.display()))?;
        files.push(File { path, bytes });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}

/// Absolute paths of the shared libraries `program` loads, from `ldd`
/// (a static program has none).
async fn shared_libraries(program: &Path) -> Result<Vec<String>, String> {
    let out = tokio::process::Command::new("ldd")
        .arg(program)
        .output()
        .await
        .map_err(|e| format!("ldd {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

/// Paths from `ldd` output lines: `name => /path (addr)` or `/path (addr)`.
fn parse_ldd(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let target = line.split("=>").nth(1).unwrap_or(line).trim();
            let path = target.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

fn content_tag(files: &[File]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update((f.bytes.len() as u64).to_le_bytes());
        h.update(&f.bytes);
    }
    hex::encode(h.finalize())[..16].to_string()
}

fn archive(files: &[File]) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut tmp = tar::Header::new_gnu();
    tmp.set_entry_type(tar::EntryType::Directory);
    tmp.set_mode(0o1777);
    tmp.set_size(0);
    tmp.set_cksum();
    tar.append_data(&mut tmp, "tmp", std::io::empty())
        .map_err(|e| e.to_string())?;
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.bytes.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(
            &mut header,
            f.path.trim_start_matches('/'),
            f.bytes.as_slice(),
        )
        .map_err(|e| format!("{}: {e}", f.path))?;
    }
    tar.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_yields_absolute_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\tnot a dynamic executable\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6".to_string(),
                "/lib64/ld-linux-x86-64.so.2".to_string()
            ]
        );
    }

    #[test]
    fn the_tag_changes_with_the_contents() {
        let a = vec![File {
            path: "/ebbtide".into(),
            bytes: b"one".to_vec(),
        }];
        let b = vec![File {
            path: "/ebbtide".into(),
            bytes: b"two".to_vec(),
        }];
        assert_ne!(content_tag(&a), content_tag(&b));
        assert_eq!(content_tag(&a), content_tag(&a));
    }
}
