//! The bootstrap file a cloud instance boots with (written by its
//! user-data): the scheduler's address, the worker id of launch index 0 and
//! the batch's one-time tokens by launch index. Shared by the provider that
//! writes it and the agent that reads it, so the format has one definition.

/// What the agent reads at boot. Its `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct BatchFile {
    /// Worker API address.
    pub scheduler: String,
    /// Worker id of launch index 0.
    pub first_worker: u64,
    /// One-time bootstrap tokens, by launch index.
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for BatchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFile")
            .field("scheduler", &self.scheduler)
            .field("first_worker", &self.first_worker)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

impl BatchFile {
    /// The token and worker id of the instance with `launch_index`.
    pub fn for_index(&self, launch_index: u64) -> Option<(u64, &str)> {
        let token = self.tokens.get(usize::try_from(launch_index).ok()?)?;
        Some((self.first_worker + launch_index, token.as_str()))
    }

    /// The file's text: `key=value` lines.
    pub fn render(&self) -> String {
        format!(
            "scheduler={}\nfirst_worker={}\ntokens={}\n",
            self.scheduler,
            self.first_worker,
            self.tokens.join(",")
        )
    }

    /// The shell script an instance boots with (EC2 user-data, a GCE
    /// startup script): it writes this file to `/etc/ebbtide/batch`
    /// readable by root alone, runs `agent_install` (lines that put the
    /// agent at `/usr/local/bin/ebbtide`, empty where the image has it) and
    /// starts the agent with `agent_flag` (`--ec2-batch`, `--gce-batch`)
    /// pointing at the file. `origin` names the mechanism in a comment.
    pub fn boot_script(&self, origin: &str, agent_install: &str, agent_flag: &str) -> String {
        format!(
            "#!/bin/sh\n\
             # Ebbtide worker bootstrap ({origin}).\n\
             set -eu\n\
             umask 077\n\
             mkdir -p /etc/ebbtide\n\
             cat > /etc/ebbtide/batch <<'EBBTIDE_BATCH'\n\
             {batch}EBBTIDE_BATCH\n\
             {agent_install}\n\
             exec /usr/local/bin/ebbtide agent {agent_flag} /etc/ebbtide/batch\n",
            batch = self.render(),
        )
    }

    /// The batch file inside a [`BatchFile::boot_script`] (what a test's
    /// stand-in for an instance hands its agent).
    pub fn from_boot_script(script: &str) -> Option<BatchFile> {
        let body = script
            .split("<<'EBBTIDE_BATCH'\n")
            .nth(1)?
            .split("EBBTIDE_BATCH")
            .next()?;
        BatchFile::parse(body).ok()
    }

    /// Parses [`BatchFile::render`]'s output; the error names the line.
    pub fn parse(text: &str) -> Result<BatchFile, String> {
        let mut scheduler = None;
        let mut first = None;
        let mut tokens = None;
        for (n, line) in text.lines().enumerate() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "scheduler" => scheduler = Some(v.to_string()),
                "first_worker" => {
                    first =
                        Some(v.parse().map_err(|_| {
                            format!("line {}: first_worker must be a number", n + 1)
                        })?)
                }
                "tokens" => tokens = Some(v.split(',').map(str::to_string).collect()),
                _ => {}
            }
        }
        Ok(BatchFile {
            scheduler: scheduler.ok_or("missing scheduler=")?,
            first_worker: first.ok_or("missing first_worker=")?,
            tokens: tokens.ok_or("missing tokens=")?,
        })
    }
}
