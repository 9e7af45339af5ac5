//! Part of `shell.rs`: what a command does beyond reading, through options of programs an
//! operator would otherwise call read-only (`find -fprint`, `sed w`, `curl -o`, `date -s`),
//! pagers, and paths that climb out of where a glob points (`/var/log/../etc/shadow`).
//!
//! What must stay true:
//! - Options are read the way the programs read them: GNU long options may be abbreviated
//!   to any unique prefix (`--to-com` is `--to-command`), take their value after `=` or as
//!   the next word, short options bundle (`-ni`), and `--` ends the options. Every prefix of
//!   a listed long option counts (an ambiguous one makes the program fail, so refusing it
//!   costs nothing).
//! - Over-inclusive on purpose: a rule built on these effects is a guardrail against an
//!   agent looking for a write, so doubt counts as the effect.

use super::*;

/// Something a command does that a "read-only" allow rule must not admit by accident.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(example = "file_write")]
pub enum CommandEffect {
    /// Writes, creates or deletes files through an option or a script command of a program
    /// that otherwise reads: `find -fprint/-fprintf/-fls/-delete`, `sed -i` and `w`,
    /// `sort -o`, `tee`, `curl -o/-O/-D/-K/--trace`, `wget`, `git --output`, `tar -x/-c`,
    /// `dd of=`, `uniq IN OUT`, `split`, `ssh-keygen`, ...
    FileWrite,
    /// An interactive pager that can run commands or read other files (`less`, `more`,
    /// `man`, and `journalctl`/`systemctl`/`git` unless forced non-interactive).
    Pager,
    /// Changes the system: `date -s`, `hwclock --set/-w`, `hostname NAME`, `sysctl -w`,
    /// `timedatectl set-*`.
    SystemChange,
    /// A path argument with a `..` component: a path glob (`/var/log/*`) must not be
    /// escaped by climbing out of it.
    PathTraversal,
}

/// Whether `arg` names the GNU long option `--{full}` (any prefix of it, with or without
/// `=value`).
pub(super) fn long_option(arg: &str, full: &str) -> bool {
    let Some(name) = arg.strip_prefix("--") else {
        return false;
    };
    let name = name.split('=').next().unwrap_or(name);
    !name.is_empty() && full.starts_with(name)
}

/// Whether a short-option word (`-ni`, not `--x`) bundles the letter `c`. Words after `--`
/// are not options; the caller passes only the words before it.
fn short_flag(arg: &str, c: char) -> bool {
    arg.len() > 1 && arg.starts_with('-') && !arg.starts_with("--") && arg[1..].contains(c)
}

/// The option words of `rest`: those before a `--`.
fn options(rest: &[String]) -> &[String] {
    let end = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    &rest[..end]
}

/// The effects of one command (its own argv; wrapper chains are looked through by the
/// caller).
pub(super) fn effects_of(argv: &[String]) -> Vec<CommandEffect> {
    let mut out = Vec::new();
    let Some(program) = argv.first() else {
        return out;
    };
    let rest = &argv[1..];
    let name = basename(program).to_ascii_lowercase();
    let opts = options(rest);
    let any_long = |names: &[&str]| opts.iter().any(|a| names.iter().any(|n| long_option(a, n)));
    let any_short = |letters: &str| {
        opts.iter()
            .any(|a| letters.chars().any(|c| short_flag(a, c)))
    };
    let writes = match name.as_str() {
        "find" => rest.iter().any(|a| {
            matches!(
                a.as_str(),
                "-fprint" | "-fprint0" | "-fprintf" | "-fls" | "-delete"
            )
        }),
        "sed" | "gsed" => {
            any_short("iw")
                || any_long(&["in-place", "write"])
                || rest
                    .iter()
                    .filter(|a| !a.starts_with('-'))
                    .any(|script| sed_writes(script))
        }
        "sort" => any_short("o") || any_long(&["output"]),
        "tee" => true,
        "dd" => rest.iter().any(|a| a.starts_with("of=")),
        "curl" => {
            any_short("oODKc")
                || any_long(&[
                    "output",
                    "remote-name",
                    "remote-name-all",
                    "dump-header",
                    "config",
                    "cookie-jar",
                    "trace",
                    "trace-ascii",
                    "stderr",
                    "output-dir",
                    "etag-save",
                    "hsts",
                    "alt-svc",
                ])
        }
        // wget saves what it fetches unless told to write to stdout.
        "wget" => {
            !rest.windows(2).any(|w| w[0] == "-O" && w[1] == "-")
                && !rest
                    .iter()
                    .any(|a| a == "-O-" || a == "--output-document=-")
        }
        "git" => any_long(&["output", "output-directory"]) || any_short("o"),
        "tar" | "gtar" | "bsdtar" => {
            // The first word may be a bundle without a dash (`tar xf a.tar`).
            let bundle = rest
                .first()
                .filter(|a| !a.starts_with('-'))
                .is_some_and(|a| a.contains(['x', 'c', 'r', 'u', 'A']));
            bundle
                || any_short("xcruA")
                || any_long(&[
                    "extract",
                    "get",
                    "create",
                    "append",
                    "update",
                    "catenate",
                    "concatenate",
                    "delete",
                    "remove-files",
                ])
        }
        "uniq" => rest.iter().filter(|a| !a.starts_with('-')).count() >= 2,
        "split" | "csplit" | "ssh-keygen" | "install" | "truncate" | "touch" | "mkfifo"
        | "mknod" | "shred" | "unzip" | "gunzip" | "gzip" | "bunzip2" | "bzip2" | "xz" | "unxz"
        | "zstd" | "unzstd" => !rest.iter().any(|a| {
            matches!(
                a.as_str(),
                "-c" | "--stdout" | "-l" | "--list" | "-t" | "--test" | "--help" | "--version"
            )
        }),
        _ => false,
    };
    if writes {
        out.push(CommandEffect::FileWrite);
    }
    let pager = match name.as_str() {
        "less" | "more" | "most" | "pg" | "view" | "vi" | "vim" | "nano" | "emacs" => true,
        "man" => !any_short("P") && !any_long(&["pager"]),
        "journalctl" | "systemctl" | "loginctl" | "timedatectl" | "hostnamectl" | "busctl"
        | "coredumpctl" => !any_long(&["no-pager"]),
        "git" => !any_long(&["no-pager"]) && !any_short("P"),
        _ => false,
    };
    if pager {
        out.push(CommandEffect::Pager);
    }
    let changes = match name.as_str() {
        "date" => any_short("s") || any_long(&["set"]),
        "hwclock" => any_short("w") || any_long(&["set", "systohc", "hctosys", "adjust"]),
        "hostname" => {
            rest.iter().any(|a| !a.starts_with('-'))
                || any_short("bF")
                || any_long(&["file", "boot"])
        }
        "sysctl" => {
            any_short("wpf")
                || any_long(&["write", "load", "system"])
                || rest.iter().any(|a| a.contains('='))
        }
        "timedatectl" => rest.iter().any(|a| a.starts_with("set-")),
        _ => false,
    };
    if changes {
        out.push(CommandEffect::SystemChange);
    }
    if rest.iter().any(|a| climbs(a)) {
        out.push(CommandEffect::PathTraversal);
    }
    out
}

/// A `..` path component anywhere in a word (also after `=`, as in `--file=../x`).
fn climbs(word: &str) -> bool {
    word.split(['/', '=']).any(|part| part == "..")
}

/// Whether a sed script may write a file: a `w`/`W` command, or the `w` flag of `s`.
/// Over-inclusive: any `w` or `W` followed by a blank and a name, anywhere in the script.
fn sed_writes(script: &str) -> bool {
    let chars: Vec<char> = script.chars().collect();
    chars
        .windows(2)
        .any(|w| (w[0] == 'w' || w[0] == 'W') && w[1].is_whitespace())
        || script.ends_with(['w', 'W'])
}

/// A path with `.`, `..` and repeated `/` resolved lexically (symlinks are not followed);
/// `None` for a relative path that climbs above its start. Used so a path glob matches the
/// path that will be opened, not how it was spelled.
pub fn normalize_path(path: &str) -> Option<String> {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !absolute {
                    return None;
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Some(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}
