//! Unit tests of `shell.rs`.

use super::*;
use ShellFeature as F;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

fn argv(cmd: &str) -> Vec<String> {
    let facts = inspect_command(cmd);
    assert!(!facts.unparsed, "{cmd:?} unparsed: {:?}", facts.reason);
    assert!(
        facts.features.is_empty(),
        "{cmd:?} features {:?}",
        facts.features
    );
    facts.argv.unwrap_or_else(|| panic!("{cmd:?} has no argv"))
}

fn features(cmd: &str) -> Vec<ShellFeature> {
    let facts = inspect_command(cmd);
    assert!(!facts.unparsed, "{cmd:?} unparsed: {:?}", facts.reason);
    assert!(facts.argv.is_none(), "{cmd:?} compound but has argv");
    assert!(facts.program.is_none() && facts.wrapper.is_none());
    facts.features
}

fn has(cmd: &str, f: ShellFeature) {
    let got = features(cmd);
    assert!(got.contains(&f), "{cmd:?}: expected {f:?} in {got:?}");
}

fn unparsed(cmd: &str) -> String {
    let facts = inspect_command(cmd);
    assert!(facts.unparsed, "{cmd:?} should be unparsed: {facts:?}");
    assert!(facts.argv.is_none() && facts.features.is_empty());
    facts.reason.unwrap_or_default()
}

fn wrapper(cmd: &str) -> Option<Wrapper> {
    let facts = inspect_command(cmd);
    assert!(facts.argv.is_some(), "{cmd:?}: {facts:?}");
    facts.wrapper
}

#[test]
fn plain_words() {
    assert_eq!(argv("ls -la"), s(&["ls", "-la"]));
    assert_eq!(argv("  ls \t -la  "), s(&["ls", "-la"]));
    assert_eq!(
        argv("systemctl status nginx"),
        s(&["systemctl", "status", "nginx"])
    );
    assert_eq!(argv("cat /etc/hostname\n"), s(&["cat", "/etc/hostname"]));
    assert_eq!(argv("\n\nls\n\n"), s(&["ls"]));
    assert_eq!(argv("grep -r foo ."), s(&["grep", "-r", "foo", "."]));
    assert_eq!(argv("echo héllo 日本"), s(&["echo", "héllo", "日本"]));
    assert_eq!(argv("echo a#b a=b"), s(&["echo", "a#b", "a=b"]));
    assert_eq!(
        argv("find . -exec rm {} \\;"),
        s(&["find", ".", "-exec", "rm", "{}", ";"])
    );
}

#[test]
fn quotes_and_escapes() {
    assert_eq!(argv("echo 'a b' \"c d\""), s(&["echo", "a b", "c d"]));
    assert_eq!(argv("echo 'a\"b' \"a'b\""), s(&["echo", "a\"b", "a'b"]));
    assert_eq!(
        argv("echo '$HOME' '`x`' '*'"),
        s(&["echo", "$HOME", "`x`", "*"])
    );
    assert_eq!(
        argv("echo \"\\$x \\` \\\" \\\\ \\n\""),
        s(&["echo", "$x ` \" \\ \\n"])
    );
    assert_eq!(
        argv("echo a\\ b \\* \\$x \\'"),
        s(&["echo", "a b", "*", "$x", "'"])
    );
    assert_eq!(argv("echo a\\\nb"), s(&["echo", "ab"]));
    assert_eq!(argv("echo \"a\\\nb\""), s(&["echo", "ab"]));
    assert_eq!(argv("echo 'a\nb'"), s(&["echo", "a\nb"]));
    assert_eq!(argv("echo '' \"\" x''y"), s(&["echo", "", "", "xy"]));
    assert_eq!(argv("''"), s(&[""]));
    assert_eq!(argv("echo a'b'\"c\"d"), s(&["echo", "abcd"]));
    assert_eq!(
        argv("echo '#x' \\#y \"~\" '{a,b}'"),
        s(&["echo", "#x", "#y", "~", "{a,b}"])
    );
    assert_eq!(
        argv("echo $ a$ \"$\" \"a$\""),
        s(&["echo", "$", "a$", "$", "a$"])
    );
    // Quoted keywords and assignments are ordinary words.
    assert_eq!(argv("'if' x"), s(&["if", "x"]));
    assert_eq!(argv("'A=1' x"), s(&["A=1", "x"]));
}

#[test]
fn unterminated_and_bad_input() {
    unparsed("echo 'abc");
    unparsed("echo \"abc");
    unparsed("echo abc\\");
    unparsed("echo $(ls");
    unparsed("echo `ls");
    unparsed("echo ${x");
    unparsed("echo $((1+2)");
    unparsed("echo $'abc");
    unparsed("(ls");
    unparsed("ls)");
    unparsed("");
    unparsed("   \n ");
    unparsed("# only a comment");
    unparsed("echo a\0b");
    unparsed("echo a\rb");
    unparsed("echo \u{1b}[31m");
    unparsed("echo \u{7f}");
    unparsed("echo \u{202E}abc");
    unparsed("ls >");
    unparsed("ls > | x");
    unparsed("cat <<");
    unparsed("cat <<EOF");
    unparsed("cat <<EOF\nbody\n");
    unparsed("echo $/");
    unparsed("x;;");
    let reason = unparsed(&"a".repeat(MAX_COMMAND_BYTES + 1));
    assert!(reason.contains("longer"), "{reason}");
    assert!(!inspect_command(&"a".repeat(MAX_COMMAND_BYTES)).unparsed);
    let deep = "$(".repeat(MAX_NESTING + 1) + &")".repeat(MAX_NESTING + 1);
    assert!(unparsed(&deep).contains("nested"));
    let ok = "echo ".to_string() + &"$(".repeat(10) + &")".repeat(10);
    has(&ok, F::CommandSubstitution);
}

#[test]
fn keywords() {
    for cmd in [
        "if true; then ls; fi",
        "for x in a b; do echo $x; done",
        "while true; do ls; done",
        "until false; do ls; done",
        "case x in a) ls;; esac",
        "function f { ls; }",
        "! ls",
        "[[ -f x ]]",
        "ls; if x; then y; fi",
        "echo $(if x; then y; fi)",
        "select x in a; do ls; done",
        "coproc ls",
    ] {
        let reason = unparsed(cmd);
        assert!(
            reason.contains("keyword") || reason.contains("case"),
            "{cmd}: {reason}"
        );
    }
    // Not in command position: ordinary words.
    assert_eq!(
        argv("echo if then fi !"),
        s(&["echo", "if", "then", "fi", "!"])
    );
}

#[test]
fn expansions() {
    has("echo $HOME", F::VariableExpansion);
    has("echo ${x}", F::VariableExpansion);
    has("echo ${x:-'a}'}", F::VariableExpansion);
    has("echo \"$x\"", F::VariableExpansion);
    has("echo \"${x}y\"", F::VariableExpansion);
    for v in ["$1", "$@", "$*", "$#", "$?", "$-", "$$", "$!", "$0"] {
        has(&format!("echo {v}"), F::VariableExpansion);
    }
    has("echo $(ls)", F::CommandSubstitution);
    has("echo `ls`", F::CommandSubstitution);
    has("echo \"$(ls)\"", F::CommandSubstitution);
    has("echo \"`ls`\"", F::CommandSubstitution);
    has("echo \"$(echo \")\")\"", F::CommandSubstitution);
    has("echo $(echo $(id))", F::CommandSubstitution);
    has("echo $((1+(2*3)))", F::ArithmeticExpansion);
    has("echo $[1+2]", F::ArithmeticExpansion);
    has("echo $'a\\'b'", F::AnsiCQuoting);
    has("echo $\"hello\"", F::LocaleQuoting);
    has("diff <(ls a) >(ls b)", F::ProcessSubstitution);
    // `$'` and `$"` mean nothing special inside double quotes.
    assert_eq!(features("echo \"$'x'\" $y"), vec![F::VariableExpansion]);
}

#[test]
fn globs_braces_tilde() {
    has("ls *", F::Glob);
    has("ls a?c", F::Glob);
    has("ls [ab]", F::Glob);
    has("[ -f x ]", F::Glob);
    assert_eq!(argv("ls '*' \"?\" \\["), s(&["ls", "*", "?", "["]));
    has("echo {a,b}", F::BraceExpansion);
    has("echo x{1..3}y", F::BraceExpansion);
    has("echo {'a',b}", F::BraceExpansion);
    assert_eq!(
        argv("echo {} {a} {a'..'b} {x"),
        s(&["echo", "{}", "{a}", "{a..b}", "{x"])
    );
    has("ls ~", F::Tilde);
    has("ls ~/x", F::Tilde);
    has("ls ~root", F::Tilde);
    has("ls --dir=~/x", F::Tilde);
    has("ls a:~/x", F::Tilde);
    assert_eq!(argv("ls a~ '~' \\~"), s(&["ls", "a~", "~", "~"]));
}

#[test]
fn operators() {
    assert_eq!(features("ls; pwd"), vec![F::List]);
    assert_eq!(features("ls && pwd"), vec![F::List]);
    assert_eq!(features("ls || pwd"), vec![F::List]);
    assert_eq!(features("ls\npwd"), vec![F::List]);
    assert_eq!(features("ls ;"), vec![F::List]);
    assert_eq!(features("ls &"), vec![F::Background]);
    assert_eq!(features("ls | grep x"), vec![F::Pipeline]);
    assert_eq!(features("ls |& grep x"), vec![F::Pipeline]);
    assert_eq!(features("ls |\n grep x"), vec![F::Pipeline]);
    assert_eq!(features("ls 2>&1"), vec![F::Redirection]);
    assert_eq!(features("ls >file"), vec![F::Redirection]);
    assert_eq!(features("ls >> file"), vec![F::Redirection]);
    assert_eq!(features("cat <in"), vec![F::Redirection]);
    assert_eq!(features("cat <>f"), vec![F::Redirection]);
    assert_eq!(features("ls >|f"), vec![F::Redirection]);
    assert_eq!(features("ls &>f"), vec![F::Redirection]);
    assert_eq!(features("ls &>>f"), vec![F::Redirection]);
    assert_eq!(features("cat <<< hi"), vec![F::Heredoc]);
    assert_eq!(features("cat <<EOF\nhello 'world\nEOF"), vec![F::Heredoc]);
    assert_eq!(features("cat <<'EOF'\n$x `y`\nEOF\n"), vec![F::Heredoc]);
    assert_eq!(
        features("cat <<-EOF\n\tbody\n\tEOF\nls"),
        vec![F::List, F::Heredoc]
    );
    assert_eq!(features("cat <<A <<B\na\nA\nb\nB"), vec![F::Heredoc]);
    assert_eq!(features("(ls)"), vec![F::Subshell]);
    assert_eq!(features("(cd /; ls)"), vec![F::List, F::Subshell]);
    assert_eq!(features("{ ls; }"), vec![F::List, F::Group]);
    assert_eq!(features("ls # comment"), vec![F::Comment]);
    assert_eq!(features("ls #c\n"), vec![F::Comment]);
    assert_eq!(features("FOO=1 cmd"), vec![F::Assignment]);
    assert_eq!(features("A=1 B+=2 cmd"), vec![F::Assignment]);
    assert_eq!(features("FOO=1"), vec![F::Assignment]);
    assert_eq!(
        features("FOO=$(id) ls"),
        vec![F::CommandSubstitution, F::Assignment]
    );
    // Not an assignment after the command name, or with a quoted name.
    assert_eq!(argv("env FOO=1 rm"), s(&["env", "FOO=1", "rm"]));
    assert_eq!(argv("\"FOO\"=1"), s(&["FOO=1"]));
    assert_eq!(argv("1A=1"), s(&["1A=1"]));
}

#[test]
fn wrappers() {
    use Wrapper as W;
    let cases: &[(&str, Option<W>)] = &[
        ("env FOO=1 rm", Some(W::Env)),
        ("/usr/bin/env ls", Some(W::Env)),
        ("/usr/bin/env python3 -c x", Some(W::Interpreter)),
        ("env -i sh -c x", Some(W::ShellC)),
        ("sudo -u x ls", Some(W::Privilege)),
        ("nohup sudo ls", Some(W::Privilege)),
        ("doas ls", Some(W::Privilege)),
        ("xargs rm", Some(W::Xargs)),
        ("xargs -I{} sh -c 'x {}'", Some(W::ShellC)),
        ("find . -exec rm {} \\;", Some(W::FindExec)),
        ("find . -execdir bash -c x \\;", Some(W::ShellC)),
        ("find . -name x -delete", None),
        ("find . -name '*.log'", None),
        ("sh -c 'x'", Some(W::ShellC)),
        ("bash", Some(W::ShellC)),
        ("bash script.sh", Some(W::ShellC)),
        ("/bin/dash -c x", Some(W::ShellC)),
        ("ksh93 -c x", Some(W::ShellC)),
        ("bash --version", None),
        ("busybox sh", Some(W::ShellC)),
        ("busybox ls", Some(W::Runner)),
        ("busybox busybox sh -c x", Some(W::ShellC)),
        ("python3 -c 'print(1)'", Some(W::Interpreter)),
        ("python3 script.py", Some(W::Interpreter)),
        ("python3.12", Some(W::Interpreter)),
        ("python3 --version", None),
        ("python3 -v", Some(W::Interpreter)),
        ("perl -e 'print 1'", Some(W::Interpreter)),
        ("perl -v", None),
        ("awk '{print}'", Some(W::Interpreter)),
        ("gawk -f x.awk", Some(W::Interpreter)),
        ("node -e 1", Some(W::Interpreter)),
        ("Rscript -e 1", Some(W::Interpreter)),
        ("R -e 1", Some(W::Interpreter)),
        ("sed -n 1,5p file", None),
        ("sed 's/a/b/' file", None),
        ("sed -n -e 1p -e 2p file", None),
        ("sed -i.bak s/a/b/ file", None),
        ("sed 's/a/id/e' file", Some(W::Interpreter)),
        ("sed -e '1e id' file", Some(W::Interpreter)),
        ("sed -ne1e\\ id file", Some(W::Interpreter)),
        ("sed -f script.sed file", Some(W::Interpreter)),
        ("sed --expression=1e\\ id", Some(W::Interpreter)),
        ("sed --sandbox 's/a/b/e' file", None),
        ("sed --frobnicate 1p", Some(W::Interpreter)),
        ("nohup x", Some(W::Runner)),
        ("env -S 'sh -c x'", Some(W::ShellC)),
        ("env '-Spython3 -c x'", Some(W::Interpreter)),
        ("ssh host 'sudo rm x'", Some(W::Privilege)),
        ("watch 'ls -l'", Some(W::Runner)),
        ("timeout 5 x", Some(W::Runner)),
        ("timeout -k 1 5 python3 x.py", Some(W::Interpreter)),
        ("nice -n 5 bash -c x", Some(W::ShellC)),
        ("ssh host ls", Some(W::Runner)),
        ("exec ls", Some(W::Runner)),
        ("command -v ls", Some(W::Runner)),
        ("eval ls", Some(W::Runner)),
        (". ./x", Some(W::Runner)),
        ("source x", Some(W::Runner)),
        ("time ls", Some(W::Runner)),
        ("rsync -avz a b", None),
        ("rsync -e ssh a b", Some(W::Runner)),
        ("rsync --rsh=ssh a b", Some(W::Runner)),
        ("tar -czf x.tgz dir", None),
        ("tar --to-command=sh -xf x.tar", Some(W::Runner)),
        ("docker ps", None),
        ("docker exec c ls", Some(W::Runner)),
        ("ip netns exec ns ls", Some(W::Runner)),
        ("ip addr", None),
        ("/lib64/ld-linux-x86-64.so.2 /bin/ls", Some(W::Runner)),
        ("ls -la", None),
        ("systemctl status nginx", None),
        ("cat /etc/hostname", None),
        ("grep -r foo .", None),
        ("grep sh file", None),
        ("/tmp/x/systemctl status", None),
    ];
    for (cmd, want) in cases {
        assert_eq!(wrapper(cmd), *want, "{cmd}");
    }
    let facts = inspect_command("/tmp/x/systemctl status");
    assert_eq!(facts.program.as_deref(), Some("/tmp/x/systemctl"));
    let facts = inspect_command("/usr/bin/sudo ls");
    assert_eq!(facts.program.as_deref(), Some("/usr/bin/sudo"));
    assert_eq!(facts.wrapper, Some(Wrapper::Privilege));
}

#[test]
fn wrapper_chain_scan_is_bounded() {
    let mut v = vec!["xargs".to_string()];
    v.extend(std::iter::repeat_n("find".to_string(), 10_000));
    v.push("-exec".to_string());
    let facts = inspect_argv(&v);
    assert!(!facts.unparsed);
    assert!(facts.wrapper.is_some());
}

#[test]
fn argv_facts() {
    let facts = inspect_argv(&s(&["sudo", "ls"]));
    assert_eq!(facts.argv, Some(s(&["sudo", "ls"])));
    assert_eq!(facts.program.as_deref(), Some("sudo"));
    assert_eq!(facts.wrapper, Some(Wrapper::Privilege));
    assert!(facts.features.is_empty() && !facts.unparsed);
    let facts = inspect_argv(&s(&["echo", "$(id) | x; y"]));
    assert!(facts.features.is_empty() && facts.wrapper.is_none() && facts.argv.is_some());
    assert!(inspect_argv(&[]).unparsed);
    assert!(inspect_argv(&s(&["echo", "a\0b"])).unparsed);
    assert!(inspect_argv(&[String::new(); 1]).argv.is_some());
    assert!(inspect_argv(&["a".repeat(MAX_COMMAND_BYTES)]).unparsed);
}

#[test]
fn quoting() {
    assert_eq!(
        quote_argv(&s(&["ls", "-la", "/tmp"])).as_deref(),
        Ok("ls -la /tmp")
    );
    assert_eq!(
        quote_argv(&s(&["echo", "it's"])).as_deref(),
        Ok("echo 'it'\\''s'")
    );
    assert_eq!(quote_argv(&s(&["echo", ""])).as_deref(), Ok("echo ''"));
    assert_eq!(
        quote_argv(&s(&["if", "A=1", "~"])).as_deref(),
        Ok("'if' 'A=1' '~'")
    );
    assert!(quote_argv(&[]).is_err());
    assert!(quote_argv(&s(&["a\0"])).is_err());
}

/// xorshift64*: deterministic randomness without a dev-dependency.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[test]
fn quote_round_trip() {
    const ALPHABET: &[char] = &[
        'a', 'Z', '0', ' ', '\t', '\n', '\'', '"', '\\', '$', '`', '*', '?', '[', ']', '{', '}',
        ',', '.', '~', '#', '=', '!', ';', '&', '|', '(', ')', '<', '>', '-', '/', '%', '@', '+',
        ':', '^', 'é', '日', '😀', '\u{a0}',
    ];
    const WORDS: &[&str] = &[
        "if", "time", "{", "!", "[[", "A=1", "$(id)", "''", "--", "-",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5000 {
        let n = 1 + rng.below(5);
        let argv: Vec<String> = (0..n)
            .map(|_| {
                if rng.below(8) == 0 {
                    return WORDS[rng.below(WORDS.len())].to_string();
                }
                let len = rng.below(8);
                (0..len)
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect()
            })
            .collect();
        let quoted = quote_argv(&argv).unwrap();
        let facts = inspect_command(&quoted);
        assert!(
            facts.features.is_empty(),
            "{argv:?} → {quoted:?}: {facts:?}"
        );
        assert_eq!(facts.argv.as_ref(), Some(&argv), "{quoted:?}: {facts:?}");
        assert_eq!(facts.program.as_ref(), argv.first());
    }
}

#[test]
fn random_input_never_panics() {
    const PIECES: &[&str] = &[
        "a", " ", "\n", "'", "\"", "\\", "$", "`", "(", ")", "{", "}", "[", "]", "$(", "${", "$((",
        "))", "<<", "EOF", "<(", "|", "&", ";", "#", "~", "*", "=", "é", "\t", "-",
    ];
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let len = rng.below(24);
        let cmd: String = (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect();
        let facts = inspect_command(&cmd);
        // Invariants of every result.
        assert_eq!(facts.unparsed, facts.reason.is_some());
        assert!(facts.argv.is_none() || facts.features.is_empty());
        assert!(facts.features.windows(2).all(|w| w[0] < w[1]));
    }
    for _ in 0..5_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let cmd = String::from_utf8_lossy(&bytes);
        let _ = inspect_command(&cmd);
        let _ = inspect_argv(&[cmd.to_string()]);
    }
}

#[test]
fn large_inputs_are_linear() {
    let many = "a ".repeat(MAX_COMMAND_BYTES / 2 - 1);
    assert_eq!(argv(&many).len(), MAX_COMMAND_BYTES / 2 - 1);
    let quotes = "\"".repeat(MAX_COMMAND_BYTES);
    assert!(!inspect_command(&quotes).unparsed);
    let parens =
        "(".repeat(MAX_COMMAND_BYTES / 2 - 2) + "ls" + &")".repeat(MAX_COMMAND_BYTES / 2 - 2);
    has(&parens, F::Subshell);
    let heredoc = "cat <<E\n".to_string() + &"x\n".repeat(20_000) + "E";
    has(&heredoc, F::Heredoc);
}

#[test]
fn effects_read_options_the_way_the_programs_do() {
    let effects = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        inspect_argv(&argv).effects
    };
    use CommandEffect::*;
    for argv in [
        &["find", ".", "-fprint", "x"][..],
        &["find", ".", "-delete"],
        &["sed", "-ni", "p", "f"],
        &["sed", "--in-pl=.bak", "p", "f"],
        &["sed", "-n", "w out", "f"],
        &["sort", "--outp=x", "f"],
        &["curl", "-sSo", "x", "http://h/"],
        &["curl", "--remote-n", "http://h/x"],
        &["wget", "http://h/x"],
        &["tar", "xf", "a.tar"],
        &["tar", "--extr", "-f", "a.tar"],
        &["uniq", "in", "out"],
        &["tee", "x"],
        &["dd", "if=/dev/zero", "of=x"],
        &["timeout", "5", "find", ".", "-delete"],
    ] {
        assert!(effects(argv).contains(&FileWrite), "{argv:?}");
    }
    for argv in [
        &["find", ".", "-name", "x"][..],
        &["sed", "-n", "1p", "f"],
        &["sort", "f"],
        &["curl", "-s", "http://h/"],
        &["wget", "-O", "-", "http://h/x"],
        &["tar", "-tf", "a.tar"],
        &["tar", "tvf", "a.tar"],
        &["uniq", "in"],
        &["gzip", "-c", "f"],
        // After `--` nothing is an option.
        &["sort", "--", "-o"],
    ] {
        assert!(!effects(argv).contains(&FileWrite), "{argv:?}");
    }
    assert!(effects(&["less", "f"]).contains(&Pager));
    assert!(effects(&["journalctl", "-u", "x"]).contains(&Pager));
    assert!(!effects(&["journalctl", "--no-pag", "-u", "x"]).contains(&Pager));
    assert!(effects(&["date", "-s", "now"]).contains(&SystemChange));
    assert!(effects(&["date", "--se=now"]).contains(&SystemChange));
    assert!(!effects(&["date", "+%s"]).contains(&SystemChange));
    assert!(effects(&["sysctl", "kernel.x=1"]).contains(&SystemChange));
    assert!(effects(&["cat", "/var/log/../etc/shadow"]).contains(&PathTraversal));
    assert!(effects(&["grep", "--file=../x", "y"]).contains(&PathTraversal));
    assert!(!effects(&["cat", "/var/log/a..b"]).contains(&PathTraversal));
}

#[test]
fn option_prefixes_builtins_and_configuration_that_run_code() {
    let wrapper = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        inspect_argv(&argv).wrapper
    };
    for argv in [
        &["tar", "--to-com=sh", "-xf", "a"][..],
        &["tar", "--use=sh", "-xf", "a"],
        &["tar", "--checkpoint-act=exec=sh", "-tf", "a"],
        &["tar", "--rsh-com=sh", "-tf", "h:a"],
        &["rsync", "--rs=sh", "a", "h:b"],
        &["test", "-v", "x[$(id)]"],
        &["[", "x[$(id)]", "-eq", "1", "]"],
        &["printf", "-v", "x[$(id)]", "y"],
        &["read", "x[$(id)]"],
        &["let", "x[$(id)]=1"],
        &["mapfile", "-C", "id", "x"],
        &["compgen", "-C", "id", "x"],
        &["declare", "x[$(id)]=1"],
        &["git", "-c", "core.pager=id", "log"],
        &["git", "--exec-path=/tmp", "log"],
        &["git", "ls-remote", "--upload-pack=id", "x"],
        &["awk", "BEGIN{system(\"id\")}"],
    ] {
        assert!(wrapper(argv).is_some(), "{argv:?}");
    }
    for argv in [
        &["tar", "-tf", "a"][..],
        &["test", "-f", "x"],
        &["printf", "%s\\n", "x"],
        &["git", "log", "--oneline"],
        &["awk", "--sandbox", "{print}", "f"],
    ] {
        assert!(wrapper(argv).is_none(), "{argv:?}");
    }
    assert_eq!(
        normalize_path("/var/log/../../etc//shadow").as_deref(),
        Some("/etc/shadow")
    );
    assert_eq!(normalize_path("/../../x").as_deref(), Some("/x"));
    assert_eq!(normalize_path("../x"), None);
    assert_eq!(normalize_path("./a/./b").as_deref(), Some("a/b"));
}
