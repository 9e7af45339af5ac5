//! Part of `shell.rs`: which programs run other programs or code (privilege, shells,
//! interpreters, runners, `find -exec`, `xargs`, `env`), and how severe each wrapper is.

use super::*;

pub(super) const PRIVILEGE: &[&str] = &[
    "sudo", "sudoedit", "doas", "su", "pkexec", "runuser", "sg", "newgrp", "setpriv", "capsh",
];

/// Compared after lowercasing and stripping a version suffix (`ksh93` → `ksh`).
pub(super) const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "lksh", "oksh", "pdksh", "ash", "csh", "tcsh",
    "fish", "yash", "posh", "rbash", "elvish", "nu", "xonsh",
];

/// Compared after lowercasing and stripping a version suffix (`python3.12` → `python`).
#[rustfmt::skip]
pub(super) const INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "irb", "node", "nodejs", "deno", "bun", "php", "lua",
    "luajit", "awk", "gawk", "mawk", "nawk", "tclsh", "wish", "expect", "rscript", "pwsh",
    "powershell", "osascript", "julia", "guile", "racket", "jshell", "java", "groovy",
    "scala", "ocaml", "sbcl", "clisp", "swipl", "erl", "escript", "elixir", "iex",
];

#[rustfmt::skip]
pub(super) const RUNNERS: &[&str] = &[
    "nohup", "timeout", "nice", "ionice", "chrt", "taskset", "stdbuf", "time", "watch",
    "setsid", "strace", "ltrace", "gdb", "chroot", "unshare", "nsenter", "flock", "script",
    "screen", "tmux", "ssh", "scp", "parallel", "sem", "at", "batch", "crontab",
    "systemd-run", "exec", "command", "builtin", "eval", "source", ".", "sshpass",
    "unbuffer", "xvfb-run", "valgrind", "perf", "firejail", "bwrap", "proot", "fakeroot",
    "fakechroot", "chpst", "prlimit", "numactl", "cgexec", "run-parts", "start-stop-daemon",
    "daemonize", "dbus-launch", "dbus-run-session", "systemd-nspawn", "machinectl",
    "schroot", "catchsegv", "faketime", "torsocks", "proxychains", "proxychains4",
    "setarch", "linux32", "linux64", "ssh-agent", "cpulimit", "sandbox-exec", "trap",
];

/// Container/namespace tools whose listed subcommands run a program.
pub(super) const EXEC_SUBCOMMAND_TOOLS: &[&str] = &[
    "docker", "podman", "nerdctl", "kubectl", "oc", "crictl", "ip",
];
pub(super) const EXEC_SUBCOMMANDS: &[&str] = &["exec", "run", "debug", "attach"];

/// Higher is more severe; a chain reports its most severe wrapper. Privilege ranks first:
/// `sudo sh -c x` is above all a privilege escalation.
pub(super) fn severity(w: Wrapper) -> u8 {
    match w {
        Wrapper::Env => 1,
        Wrapper::Runner => 2,
        Wrapper::Xargs => 3,
        Wrapper::FindExec => 4,
        Wrapper::Interpreter => 5,
        Wrapper::ShellC => 6,
        Wrapper::Privilege => 7,
    }
}

pub(super) fn more_severe(a: Option<Wrapper>, b: Option<Wrapper>) -> Option<Wrapper> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if severity(y) > severity(x) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

pub(super) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `python3.12` → `python`, `ksh93` → `ksh`, `perl5.36.0` → `perl`.
pub(super) fn strip_version(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
}

/// The wrapper an argv is, looking through wrapper chains (`env`, `sudo`, `nohup`, `xargs`,
/// `find -exec`, ...) for a more severe one. Instead of parsing each wrapper's options, every
/// later argument is tried as the inner program: over-inclusive (`xargs grep sh` reports
/// `ShellC`), but no option syntax can hide the inner command. An argument with blanks is
/// also split into words and tried, for commands given as one string (`env -S 'sh -c x'`,
/// `ssh host 'sudo rm x'`, `watch 'bash x'`).
pub(super) fn wrapper_of(argv: &[String]) -> Option<Wrapper> {
    let first = classify(argv)?;
    if matches!(first, Wrapper::ShellC | Wrapper::Interpreter) {
        // Their arguments are code or data, not commands.
        return Some(first);
    }
    let mut best = Some(first);
    for j in 1..argv.len().min(MAX_CHAIN_SCAN) {
        best = more_severe(best, classify(&argv[j..]));
        let arg = argv[j].as_str();
        if arg.contains(char::is_whitespace) {
            let arg = arg
                .strip_prefix("--split-string=")
                .or_else(|| arg.strip_prefix("-S"))
                .unwrap_or(arg);
            let words: Vec<String> = arg.split_whitespace().map(String::from).collect();
            best = more_severe(best, classify(&words));
        }
    }
    best
}

/// The commands a wrapper may run, for deny and review rules: every later argument taken
/// as the inner program (as [`wrapper_of`] does, over-inclusive on purpose, so no option
/// syntax hides `rm` in `timeout 10 rm x`), and every argument with blanks split into
/// words. Empty for a program that is not a wrapper.
pub fn inner_commands(argv: &[String]) -> Vec<Vec<String>> {
    if wrapper_of(argv).is_none() {
        return Vec::new();
    }
    let mut inner = Vec::new();
    for j in 1..argv.len().min(MAX_CHAIN_SCAN) {
        inner.push(argv[j..].to_vec());
        if argv[j].contains(char::is_whitespace) {
            inner.push(argv[j].split_whitespace().map(String::from).collect());
        }
    }
    inner.retain(|command: &Vec<String>| !command.is_empty());
    inner
}

/// The wrapper `args[0]` is, given its arguments; checks the literal name and its basename.
pub(super) fn classify(args: &[String]) -> Option<Wrapper> {
    let program = args.first()?;
    // `busybox busybox sh`: skip the multiplexer iteratively to its applet.
    let mut start = 0;
    while basename(&args[start]) == "busybox" && start + 1 < args.len() {
        start += 1;
    }
    if start > 0 {
        let inner = &args[start..];
        let applet = more_severe(
            classify_name(&inner[0], &inner[1..]),
            classify_name(basename(&inner[0]), &inner[1..]),
        );
        return Some(applet.unwrap_or(Wrapper::Runner));
    }
    more_severe(
        classify_name(program, &args[1..]),
        classify_name(basename(program), &args[1..]),
    )
}

/// Shell builtins that evaluate an argument as code: a variable name with an array
/// subscript is arithmetic, and arithmetic runs `$(...)` (`read 'x[$(id)]'`, `let`,
/// `declare`); others take a command to call back (`compgen -C`, `mapfile -C`,
/// `complete -C`, `trap`, `bind -x`).
pub(super) const CODE_BUILTINS: &[&str] = &[
    "let",
    "read",
    "mapfile",
    "readarray",
    "compgen",
    "complete",
    "declare",
    "typeset",
    "local",
    "export",
    "readonly",
    "unset",
    "getopts",
    "bind",
    "enable",
    "fc",
    "coproc",
];

pub(super) fn classify_name(name: &str, rest: &[String]) -> Option<Wrapper> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.as_str();
    let stem = strip_version(lower);
    if CODE_BUILTINS.contains(&lower) {
        return Some(Wrapper::ShellC);
    }
    // `test -v 'x[$(id)]'`, and arithmetic comparisons, whose operands are arithmetic.
    if matches!(lower, "test" | "[" | "[[") {
        let code = rest.iter().any(|a| {
            matches!(
                a.as_str(),
                "-v" | "-R" | "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge"
            )
        });
        return code.then_some(Wrapper::ShellC);
    }
    // `printf -v 'x[$(id)]' ...` assigns through a subscript.
    if lower == "printf" {
        return rest
            .iter()
            .any(|a| a.starts_with("-v"))
            .then_some(Wrapper::ShellC);
    }
    if lower == "env" {
        return Some(Wrapper::Env);
    }
    if PRIVILEGE.contains(&lower) {
        return Some(Wrapper::Privilege);
    }
    if lower == "xargs" {
        return Some(Wrapper::Xargs);
    }
    if lower == "find" {
        let exec = rest
            .iter()
            .any(|a| matches!(a.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir"));
        return exec.then_some(Wrapper::FindExec);
    }
    if lower == "busybox" {
        return Some(Wrapper::Runner);
    }
    if SHELLS.contains(&lower) || SHELLS.contains(&stem) {
        return (!info_only(rest, &["--version", "--help"])).then_some(Wrapper::ShellC);
    }
    if lower == "sed" || stem == "gsed" {
        return sed_runs_code(rest).then_some(Wrapper::Interpreter);
    }
    // `R` is matched exactly: stripping versions would make `r2` (radare2) match.
    if lower == "r" || INTERPRETERS.contains(&lower) || INTERPRETERS.contains(&stem) {
        let flags: &[&str] = if stem == "python" || stem == "pypy" {
            // `python -v` is verbose mode (then reads stdin), not the version.
            &["--version", "--help", "-V", "-h"]
        } else if stem.ends_with("awk") {
            // gawk's sandbox turns off `system()`, pipes and redirections.
            if rest.iter().any(|a| a == "--sandbox") {
                return None;
            }
            &["--version", "--help"]
        } else {
            &["--version", "--help", "-v", "-V", "-h"]
        };
        return (!info_only(rest, flags)).then_some(Wrapper::Interpreter);
    }
    if RUNNERS.contains(&lower) || lower.starts_with("ld-linux") || lower.starts_with("ld.so") {
        return Some(Wrapper::Runner);
    }
    if lower == "rsync" {
        // `-e`/`--rsh` and `--rsync-path` name programs to run; any short-option cluster
        // containing `e` is counted (over-inclusive).
        let runs = rest.iter().any(|a| {
            long_option(a, "rsh")
                || long_option(a, "rsync-path")
                || (a.starts_with('-') && !a.starts_with("--") && a.contains('e'))
        });
        return runs.then_some(Wrapper::Runner);
    }
    if lower == "tar" {
        let runs = rest.iter().enumerate().any(|(i, a)| {
            // GNU getopt takes any unique prefix: `--to-com`, `--use`, `--checkpoint-act`.
            [
                "to-command",
                "use-compress-program",
                "checkpoint-action",
                "info-script",
                "new-volume-script",
                "rmt-command",
                "rsh-command",
            ]
            .iter()
            .any(|full| long_option(a, full))
                || (((a.starts_with('-') && !a.starts_with("--")) || i == 0)
                    && (a.contains('I') || a.contains('F')))
        });
        return runs.then_some(Wrapper::Runner);
    }
    // Netcat variants with an exec option, and socat's EXEC/SYSTEM addresses: the classic
    // reverse shell (`nc -e /bin/sh host port`).
    if matches!(
        lower,
        "nc" | "ncat" | "netcat" | "nc.traditional" | "nc.openbsd"
    ) {
        let runs = rest.iter().any(|a| {
            (a.starts_with('-') && !a.starts_with("--") && (a.contains('e') || a.contains('c')))
                || ["exec", "sh-exec", "lua-exec"]
                    .iter()
                    .any(|full| long_option(a, full))
        });
        return runs.then_some(Wrapper::Runner);
    }
    if lower == "socat" {
        let runs = rest.iter().any(|a| {
            let upper = a.to_ascii_uppercase();
            upper.contains("EXEC:") || upper.contains("SYSTEM:")
        });
        return runs.then_some(Wrapper::Runner);
    }
    if lower == "git" {
        // Configuration on the command line runs code (`-c core.pager=...`, `-c alias.x=!sh`,
        // `-c core.sshCommand=...`), as do `--exec-path=DIR` and `--upload-pack`/`--receive-pack`.
        let runs = rest.iter().any(|a| {
            a == "-c"
                || ["config-env", "exec-path", "upload-pack", "receive-pack"]
                    .iter()
                    .any(|full| long_option(a, full))
        });
        return runs.then_some(Wrapper::Runner);
    }
    if EXEC_SUBCOMMAND_TOOLS.contains(&lower) {
        let runs = rest.iter().any(|a| EXEC_SUBCOMMANDS.contains(&a.as_str()));
        return runs.then_some(Wrapper::Runner);
    }
    None
}

/// The arguments are exactly one informational flag (`python3 --version`).
pub(super) fn info_only(rest: &[String], flags: &[&str]) -> bool {
    matches!(rest, [one] if flags.contains(&one.as_str()))
}

/// Whether a `sed` invocation could execute commands: GNU sed's `e` command and the `s///e`
/// flag run a shell. Scripts are not parsed: any script containing `e` counts, as does a
/// script file (`-f`), a missing script, or an option not known here. `--sandbox` (which
/// rejects `e`, `r` and `w`) makes it safe.
pub(super) fn sed_runs_code(rest: &[String]) -> bool {
    let mut scripts: Vec<&str> = Vec::new();
    let mut operands: Vec<&str> = Vec::new();
    let mut explicit = false;
    let mut sandbox = false;
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i].as_str();
        i += 1;
        if arg == "--" {
            operands.extend(rest[i..].iter().map(String::as_str));
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            match name {
                "expression" => {
                    explicit = true;
                    match value {
                        Some(v) => scripts.push(v),
                        None => match rest.get(i) {
                            Some(v) => {
                                scripts.push(v);
                                i += 1;
                            }
                            None => return true,
                        },
                    }
                }
                "line-length" => {
                    if value.is_none() {
                        i += 1;
                    }
                }
                "sandbox" => sandbox = true,
                "quiet" | "silent" | "regexp-extended" | "separate" | "null-data"
                | "zero-terminated" | "unbuffered" | "posix" | "debug" | "follow-symlinks"
                | "in-place" | "binary" | "help" | "version" => {}
                _ => return true,
            }
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (k, ch) in cluster.char_indices() {
                let tail = &cluster[k + ch.len_utf8()..];
                match ch {
                    'n' | 'r' | 'E' | 's' | 'u' | 'z' => {}
                    // `-i[SUFFIX]`: the rest of the cluster is the backup suffix.
                    'i' => break,
                    'e' | 'l' => {
                        let value = if tail.is_empty() {
                            let v = rest.get(i).map(String::as_str);
                            i += 1;
                            v
                        } else {
                            Some(tail)
                        };
                        if ch == 'e' {
                            explicit = true;
                            match value {
                                Some(v) => scripts.push(v),
                                None => return true,
                            }
                        }
                        break;
                    }
                    _ => return true,
                }
            }
        } else {
            operands.push(arg);
        }
    }
    if !explicit {
        match operands.first() {
            Some(script) => scripts.push(script),
            None => return true,
        }
    }
    !sandbox && scripts.iter().any(|s| s.contains('e'))
}
