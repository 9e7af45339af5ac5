//! Shell command inspection: lex a command string as POSIX `sh` would and say whether it is
//! one simple command with literal words, and if so which program it runs.
//!
//! Invariants:
//! - Only a single simple command made of literal words yields `argv: Some`. Every shell
//!   construct the lexer recognises (lists, pipes, redirections, expansions, globs, ...) is
//!   reported as a [`ShellFeature`] and makes `argv` `None`: the policy treats such a command
//!   as compound. The lexer never tries to evaluate an expansion, so it cannot get one wrong.
//! - Anything the lexer cannot fully account for is `unparsed` with a reason: unterminated
//!   quotes and substitutions, unmatched parentheses, NUL bytes, control characters other than
//!   tab and newline (and Unicode bidi controls, which can make reviewed text lie about its
//!   order), compound-command keywords in command position (`if`, `for`, `case`, `!`, `[[`,
//!   ...), `$` followed by something that is neither an expansion nor plainly literal,
//!   unterminated here-documents, input over [`MAX_COMMAND_BYTES`], and nesting deeper than
//!   [`MAX_NESTING`].
//! - The lexer is a loop over an explicit frame stack (no recursion), each character is
//!   visited a bounded number of times, and the stack is bounded, so time and memory are
//!   linear in the (bounded) input and no input can panic it.
//! - The contents of constructs that already make the command compound are lexed only as far
//!   as needed to find where they end (`${...}`, `$((...))` and backticks are scanned, not
//!   lexed; here-document bodies are skipped). Features inside them may go unreported; that
//!   is harmless because the command is compound anyway.
//! - Wrapper detection is deliberately over-inclusive: a false "wrapper" only sends a command
//!   to review, a missed one could let an allowed program run a forbidden one.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Longest command string accepted (bytes); longer → `unparsed` with a reason.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Deepest nesting of quotes and substitutions (`"$(echo "$(...)")"`) the lexer follows.
/// Bounds the frame stack, and so the cost of finding the enclosing word for each character.
const MAX_NESTING: usize = 64;
/// How many argv positions after a wrapper are examined for a more severe inner wrapper.
/// Bounds wrapper detection to O(MAX_CHAIN_SCAN × argv) even for `xargs find find find ...`;
/// beyond it the outer wrapper is still reported, which already sends the command to review.
const MAX_CHAIN_SCAN: usize = 256;

/// A shell feature found in a command line; any of them makes the command compound (never run).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(example = "pipeline")]
pub enum ShellFeature {
    /// `;` `&&` `||`, or a newline between two commands.
    List,
    /// `&` (not part of a redirection such as `>&` or `&>`).
    Background,
    /// `|` and `|&`.
    Pipeline,
    /// `<` `>` `>>` `<&` `>&` `<>` `>|` `&>` `&>>`.
    Redirection,
    /// `<<`, `<<-` and bash's here-string `<<<`.
    Heredoc,
    /// `$(...)` and backticks, also inside double quotes.
    CommandSubstitution,
    /// `<(...)` and `>(...)`.
    ProcessSubstitution,
    /// `$x` `${x}` `$1` `$@` and the other special parameters.
    VariableExpansion,
    /// `$((...))` and bash's `$[...]`.
    ArithmeticExpansion,
    /// `{a,b}` `{1..3}` (unquoted).
    BraceExpansion,
    /// `$'...'`.
    AnsiCQuoting,
    /// `$"..."`.
    LocaleQuoting,
    /// Unquoted `*` `?` `[`.
    Glob,
    /// Unquoted `~` at the start of a word or after an unquoted `=` or `:`.
    Tilde,
    /// `( ... )`.
    Subshell,
    /// `{` or `}` as a whole unquoted word.
    Group,
    /// `NAME=value` (or `NAME+=value`) before the command name.
    Assignment,
    /// Unquoted `#` starting a word.
    Comment,
}

/// How a program runs other programs or code (see `CommandFacts.wrapper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "privilege")]
pub enum Wrapper {
    /// `env` runs its operand as a program.
    Env,
    /// `sudo` `sudoedit` `doas` `su` `pkexec` `runuser` `sg` `newgrp` `setpriv` `capsh`.
    Privilege,
    /// `xargs` (runs `echo` even without an operand).
    Xargs,
    /// `find` with `-exec` `-execdir` `-ok` `-okdir` (`-delete` is not a wrapper).
    FindExec,
    /// A shell (`sh` `bash` `dash` `zsh` `ksh` `fish` ...), given `-c`, a script, or stdin;
    /// only `--version`/`--help` alone is exempt. Also `busybox sh`.
    ShellC,
    /// An interpreter fed code (`-c` `-e` a script argument, or stdin): python, perl, ruby,
    /// node, php, lua, awk, tclsh, Rscript, pwsh, osascript, ...; only a lone version/help
    /// flag is exempt. `sed` counts when its script could execute (see `sed_runs_code`).
    Interpreter,
    /// Programs that run their arguments as a command: `nohup` `timeout` `nice` `ssh`
    /// `exec` `eval` `source` `.` `busybox <applet>` ... (see `RUNNERS`).
    Runner,
}

/// What the shell lexer found in a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"argv": ["df", "-h", "/"], "program": "df", "features": [], "wrapper": null, "unparsed": false, "reason": null}))]
pub struct CommandFacts {
    /// The argv of a single simple command the lexer fully accounts for; `None` otherwise.
    pub argv: Option<Vec<String>>,
    /// argv[0] literally (so `/tmp/x/systemctl` is not `systemctl`).
    pub program: Option<String>,
    /// Shell features present (sorted, dedup). Any feature makes the command compound.
    pub features: Vec<ShellFeature>,
    /// The program runs other programs or code (see `Wrapper`); checked on argv[0]'s
    /// basename AND the literal argv[0], and through `env`/`sudo`/... chains.
    pub wrapper: Option<Wrapper>,
    /// What the command does beyond reading (see `CommandEffect`), through wrapper chains
    /// too. Sorted, deduplicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<CommandEffect>,
    /// The command could not be reduced to one plain argv (see `reason`).
    pub unparsed: bool,
    /// Why unparsed (for the agent), if so.
    pub reason: Option<String>,
}

impl CommandFacts {
    fn unparsed(reason: String) -> Self {
        CommandFacts {
            unparsed: true,
            reason: Some(reason),
            ..CommandFacts::default()
        }
    }

    /// Facts for a fully literal argv; the caller guarantees it is non-empty.
    fn simple(argv: Vec<String>) -> Self {
        let wrapper = wrapper_of(&argv);
        let mut effects = effects_of(&argv);
        for inner in inner_commands(&argv) {
            effects.extend(effects_of(&inner));
        }
        effects.sort();
        effects.dedup();
        CommandFacts {
            program: argv.first().cloned(),
            argv: Some(argv),
            wrapper,
            effects,
            ..CommandFacts::default()
        }
    }
}

/// Lexes a command string as POSIX `sh` would (quotes, backslash escapes, words) into argv.
///
/// A command with any [`ShellFeature`] is compound: `argv`, `program` and `wrapper` are
/// `None` and `features` lists what was seen. An `unparsed` result carries only the reason.
pub fn inspect_command(command: &str) -> CommandFacts {
    if command.len() > MAX_COMMAND_BYTES {
        return CommandFacts::unparsed(format!(
            "command is {} bytes, longer than the {MAX_COMMAND_BYTES} bytes accepted",
            command.len()
        ));
    }
    if let Some(reason) = forbidden_char(command) {
        return CommandFacts::unparsed(reason);
    }
    match Lexer::new(command).run() {
        Err(reason) => CommandFacts::unparsed(reason),
        Ok((argv, features)) => {
            if argv.is_empty() {
                // Only blanks, comments or operators: nothing to run, or a syntax error.
                return CommandFacts::unparsed("empty command: no command word".to_string());
            }
            if features.is_empty() {
                CommandFacts::simple(argv)
            } else {
                CommandFacts {
                    features: features.into_iter().collect(),
                    ..CommandFacts::default()
                }
            }
        }
    }
}

/// Facts for an argv given directly (no shell parsing: features empty; wrapper detection
/// still applies). NUL bytes in any argument, empty argv, or over-long input → unparsed.
pub fn inspect_argv(argv: &[String]) -> CommandFacts {
    if argv.is_empty() {
        return CommandFacts::unparsed("empty argv: no program to run".to_string());
    }
    // Count one separator byte per argument, as the joined command line would have.
    let total = argv
        .iter()
        .fold(0usize, |n, a| n.saturating_add(a.len()).saturating_add(1));
    if total > MAX_COMMAND_BYTES {
        return CommandFacts::unparsed(format!(
            "argv is {total} bytes, longer than the {MAX_COMMAND_BYTES} bytes accepted"
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return CommandFacts::unparsed(format!("argument {i} contains a NUL byte"));
    }
    CommandFacts::simple(argv.to_vec())
}

/// Quotes each argument for a POSIX shell (single quotes; `'` becomes `'\''`; safe bare words
/// may stay bare) and joins with spaces, so the remote shell recovers exactly `argv`. Returns
/// Err for an empty argv or a NUL byte (cannot be passed through a shell).
///
/// Bare words are ASCII alphanumerics and `_ @ % + , . / : -` only, and never a reserved
/// word (quoted, `if` or `time` is an ordinary command name). Everything else, including the
/// empty string, is single-quoted, inside which every byte but `'` is literal.
pub fn quote_argv(argv: &[String]) -> Result<String, String> {
    if argv.is_empty() {
        return Err("empty argv: no program to run".to_string());
    }
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if arg.contains('\0') {
            return Err(format!(
                "argument {i} contains a NUL byte, which cannot pass through a shell"
            ));
        }
        if i > 0 {
            out.push(' ');
        }
        let bare = !arg.is_empty()
            && arg.chars().all(is_bare_safe)
            && !RESERVED_WORDS.contains(&arg.as_str());
        if bare {
            out.push_str(arg);
        } else {
            out.push('\'');
            out.push_str(&arg.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    Ok(out)
}

/// Characters that mean nothing to `sh` anywhere in a word (given the word is not a reserved
/// word). `=` is excluded (assignment), `~` (tilde), `{ } ,`-free brace patterns are harmless
/// but `{`/`}` are excluded, `^` was a pipe in the Bourne shell.
fn is_bare_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '%' | '+' | ',' | '.' | '/' | ':' | '-')
}

/// Words the shell may treat as syntax in command position; quoted by [`quote_argv`].
const RESERVED_WORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for",
    "in", "function", "select", "coproc", "time", "!", "[[", "]]", "{", "}",
];

/// Words that start (or continue) compound shell syntax the lexer does not model; such a word
/// in command position makes the command `unparsed`. `{`/`}` are the `Group` feature instead,
/// and `time` is a runner (bash's `time` keyword only times the command it prefixes).
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for",
    "function", "select", "coproc", "!", "[[", "]]",
];

/// The first character the lexer refuses outright, described for the agent.
fn forbidden_char(command: &str) -> Option<String> {
    for (i, c) in command.chars().enumerate() {
        if c == '\0' {
            return Some(format!("NUL byte at character {i}"));
        }
        if c.is_control() && c != '\t' && c != '\n' {
            return Some(format!(
                "control character U+{:04X} at character {i}",
                u32::from(c)
            ));
        }
        // Bidi embeddings, overrides and isolates reorder how text displays.
        if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            return Some(format!(
                "bidirectional control character U+{:04X} at character {i}",
                u32::from(c)
            ));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------

/// Whether a word so far could be an assignment (`NAME=` / `NAME+=` with `NAME` unquoted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Assign {
    #[default]
    Start,
    Name,
    Plus,
    Yes,
    No,
}

/// The word being built in a command frame.
#[derive(Debug, Default)]
struct Word {
    /// The literal characters (quote removal done); expansions contribute nothing.
    text: String,
    /// Any character, quote or expansion seen: the word exists even if `text` is empty.
    started: bool,
    /// Some part was quoted or escaped (so it cannot be a keyword or `{`).
    quoted: bool,
    /// Previous character and whether it was quoted; `None` after an expansion.
    prev: Option<(char, bool)>,
    assign: Assign,
    /// Unquoted `{` currently open, and whether an unquoted `,` or `..` followed one.
    brace_open: usize,
    brace_sep: bool,
}

impl Word {
    fn push(&mut self, c: char, quoted: bool, features: &mut BTreeSet<ShellFeature>) {
        if !quoted {
            match c {
                '*' | '?' | '[' => {
                    features.insert(ShellFeature::Glob);
                }
                '~' if !self.started || matches!(self.prev, Some(('=' | ':', false))) => {
                    features.insert(ShellFeature::Tilde);
                }
                '{' => self.brace_open += 1,
                ',' if self.brace_open > 0 => self.brace_sep = true,
                '.' if self.brace_open > 0 && self.prev == Some(('.', false)) => {
                    self.brace_sep = true;
                }
                '}' if self.brace_open > 0 => {
                    if self.brace_sep {
                        features.insert(ShellFeature::BraceExpansion);
                    }
                    self.brace_open -= 1;
                }
                _ => {}
            }
        }
        self.assign = match (self.assign, quoted, c) {
            (Assign::Start, false, c) if c == '_' || c.is_ascii_alphabetic() => Assign::Name,
            (Assign::Name, false, c) if c == '_' || c.is_ascii_alphanumeric() => Assign::Name,
            (Assign::Name, false, '=') | (Assign::Plus, false, '=') => Assign::Yes,
            (Assign::Name, false, '+') => Assign::Plus,
            (Assign::Yes, _, _) => Assign::Yes,
            _ => Assign::No,
        };
        self.text.push(c);
        self.started = true;
        self.quoted |= quoted;
        self.prev = Some((c, quoted));
    }

    /// An empty quoted part (`''`, `""`): the word exists and is quoted.
    fn mark_quoted(&mut self) {
        self.started = true;
        self.quoted = true;
        if self.assign != Assign::Yes {
            self.assign = Assign::No;
        }
    }

    /// An expansion: the word exists but is not literal (the feature is recorded separately).
    fn mark_expansion(&mut self) {
        self.started = true;
        self.prev = None;
        if self.assign != Assign::Yes {
            self.assign = Assign::No;
        }
    }
}

/// What ends a command frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// The whole input.
    Top,
    /// `)` of `$(`.
    Dollar,
    /// `)` of `<(` / `>(`.
    Process,
}

/// Command context: words and operators.
#[derive(Debug)]
struct CmdFrame {
    closer: Closer,
    /// Open `(` subshells inside this frame.
    parens: usize,
    word: Word,
    /// The next word is in command position (keywords and assignments mean something).
    cmd_pos: bool,
    /// The current command has a word (so a newline after it separates two commands).
    has_word: bool,
    /// A newline ended a command; the next word starts another one (→ `List`).
    newline_pending: bool,
    /// The next word is a redirection target (not a command word).
    redirect_pending: bool,
    /// The next word is a here-document delimiter; `true` for `<<-` (strip leading tabs).
    heredoc_pending: Option<bool>,
}

impl CmdFrame {
    fn new(closer: Closer) -> Self {
        CmdFrame {
            closer,
            parens: 0,
            word: Word::default(),
            cmd_pos: true,
            has_word: false,
            newline_pending: false,
            redirect_pending: false,
            heredoc_pending: None,
        }
    }
}

#[derive(Debug)]
enum Frame {
    Command(CmdFrame),
    DoubleQuote,
    /// `${ ... }`: `depth` counts nested unquoted `{`.
    Param {
        depth: usize,
        in_dq: bool,
    },
    /// `$(( ... ))` (`bracket` false) or `$[ ... ]` (`bracket` true).
    Arith {
        depth: usize,
        bracket: bool,
        in_dq: bool,
    },
    Backtick,
}

type Step = Result<(), String>;

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    /// Invariant: `stack[0]` is the top-level command frame and is never popped.
    stack: Vec<Frame>,
    features: BTreeSet<ShellFeature>,
    /// Words of the top-level command frame.
    argv: Vec<String>,
    /// Here-documents whose bodies start after the next newline: (delimiter, strip tabs).
    heredocs: VecDeque<(String, bool)>,
}

fn internal() -> String {
    "internal lexer error: no command frame".to_string()
}

impl Lexer {
    fn new(command: &str) -> Self {
        Lexer {
            chars: command.chars().collect(),
            pos: 0,
            stack: vec![Frame::Command(CmdFrame::new(Closer::Top))],
            features: BTreeSet::new(),
            argv: Vec::new(),
            heredocs: VecDeque::new(),
        }
    }

    fn run(mut self) -> Result<(Vec<String>, BTreeSet<ShellFeature>), String> {
        while let Some(&c) = self.chars.get(self.pos) {
            match self.stack.last() {
                Some(Frame::Command(_)) => self.command_char(c)?,
                Some(Frame::DoubleQuote) => self.dq_char(c)?,
                Some(Frame::Param { .. } | Frame::Arith { .. }) => self.expr_char(c)?,
                Some(Frame::Backtick) => self.backtick_char(c)?,
                None => return Err(internal()),
            }
        }
        if self.stack.len() > 1 {
            let what = match self.stack.last() {
                Some(Frame::Command(f)) if f.closer == Closer::Process => "process substitution",
                Some(Frame::Command(_)) => "command substitution `$(`",
                Some(Frame::DoubleQuote) => "double quote",
                Some(Frame::Param { .. }) => "parameter expansion `${`",
                Some(Frame::Arith { bracket: false, .. }) => "arithmetic expansion `$((`",
                Some(Frame::Arith { bracket: true, .. }) => "arithmetic expansion `$[`",
                Some(Frame::Backtick) => "backtick command substitution",
                None => return Err(internal()),
            };
            return Err(format!("unterminated {what}"));
        }
        self.finish_word()?;
        let frame = self.cmd()?;
        if frame.parens > 0 {
            return Err("unmatched `(`".to_string());
        }
        if frame.heredoc_pending.is_some() || frame.redirect_pending {
            return Err("redirection without a target at end of input".to_string());
        }
        if let Some((delim, _)) = self.heredocs.front() {
            return Err(format!(
                "here-document delimited by `{delim}` has no body (missing newline)"
            ));
        }
        Ok((self.argv, self.features))
    }

    fn feature(&mut self, f: ShellFeature) {
        self.features.insert(f);
    }

    fn push_frame(&mut self, frame: Frame) -> Step {
        if self.stack.len() >= MAX_NESTING {
            return Err(format!(
                "quotes and substitutions nested deeper than {MAX_NESTING} levels"
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// The innermost command frame (the one whose word is being built).
    fn cmd(&mut self) -> Result<&mut CmdFrame, String> {
        self.stack
            .iter_mut()
            .rev()
            .find_map(|f| match f {
                Frame::Command(c) => Some(c),
                _ => None,
            })
            .ok_or_else(internal)
    }

    fn push_char(&mut self, c: char, quoted: bool) -> Step {
        let Lexer {
            stack, features, ..
        } = self;
        let frame = stack
            .iter_mut()
            .rev()
            .find_map(|f| match f {
                Frame::Command(c) => Some(c),
                _ => None,
            })
            .ok_or_else(internal)?;
        frame.word.push(c, quoted, features);
        Ok(())
    }

    /// Ends the current word of the innermost command frame (which must be on top).
    fn finish_word(&mut self) -> Step {
        let is_top = self.stack.len() == 1;
        let Some(Frame::Command(frame)) = self.stack.last_mut() else {
            return Err(internal());
        };
        if !frame.word.started {
            return Ok(());
        }
        let word = std::mem::take(&mut frame.word);
        if frame.newline_pending {
            frame.newline_pending = false;
            self.features.insert(ShellFeature::List);
        }
        frame.has_word = true;
        let target = std::mem::take(&mut frame.redirect_pending);
        if let Some(strip) = frame.heredoc_pending.take() {
            self.heredocs.push_back((word.text.clone(), strip));
        } else if !target {
            if !word.quoted && (word.text == "{" || word.text == "}") {
                self.features.insert(ShellFeature::Group);
                // After `{` a command starts; after `}` only operators may follow.
                frame.cmd_pos = word.text == "{";
            } else if frame.cmd_pos {
                if !word.quoted && KEYWORDS.contains(&word.text.as_str()) {
                    return Err(format!(
                        "shell keyword `{}` starts compound syntax that is not supported; \
                         send one simple command",
                        word.text
                    ));
                }
                if word.assign == Assign::Yes {
                    // Assignments keep command position: `A=1 B=2 cmd`.
                    self.features.insert(ShellFeature::Assignment);
                } else {
                    frame.cmd_pos = false;
                }
            }
        }
        if is_top {
            self.argv.push(word.text);
        }
        Ok(())
    }

    /// Before an operator: end the word, and refuse an operator where a redirection target
    /// or here-document delimiter was due (`ls > | x`, `cat << ;`).
    fn before_operator(&mut self) -> Result<&mut CmdFrame, String> {
        self.finish_word()?;
        let pos = self.pos;
        let frame = self.cmd()?;
        if frame.redirect_pending || frame.heredoc_pending.is_some() {
            return Err(format!(
                "redirection without a target before character {pos}"
            ));
        }
        Ok(frame)
    }

    /// A control operator that starts a new command.
    fn separator(&mut self, feature: ShellFeature, len: usize) -> Step {
        let frame = self.before_operator()?;
        frame.cmd_pos = true;
        frame.has_word = false;
        frame.newline_pending = false;
        self.feature(feature);
        self.pos += len;
        Ok(())
    }

    fn redirection(&mut self, feature: ShellFeature, len: usize, heredoc: Option<bool>) -> Step {
        let frame = self.before_operator()?;
        frame.redirect_pending = true;
        frame.heredoc_pending = heredoc;
        self.feature(feature);
        self.pos += len;
        Ok(())
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn command_char(&mut self, c: char) -> Step {
        match c {
            ' ' | '\t' => {
                self.finish_word()?;
                self.pos += 1;
            }
            '\n' => {
                let frame = self.before_operator()?;
                if frame.has_word {
                    frame.newline_pending = true;
                }
                frame.has_word = false;
                frame.cmd_pos = true;
                self.pos += 1;
                self.read_heredocs()?;
            }
            '\\' => match self.peek(1) {
                None => return Err("trailing backslash at end of input".to_string()),
                Some('\n') => self.pos += 2, // line continuation: removed entirely
                Some(n) => {
                    self.push_char(n, true)?;
                    self.pos += 2;
                }
            },
            '\'' => self.single_quote()?,
            '"' => {
                self.cmd()?.word.mark_quoted();
                self.push_frame(Frame::DoubleQuote)?;
                self.pos += 1;
            }
            '`' => self.backtick()?,
            '$' => self.dollar(false)?,
            '#' if !self.cmd()?.word.started => {
                self.feature(ShellFeature::Comment);
                // The comment runs to the newline, which is left to end the command.
                while let Some(n) = self.peek(0) {
                    if n == '\n' {
                        break;
                    }
                    self.pos += 1;
                }
            }
            ';' => {
                if self.peek(1) == Some(';') {
                    return Err(format!("`;;` outside `case` at character {}", self.pos));
                }
                self.separator(ShellFeature::List, 1)?;
            }
            '&' => match self.peek(1) {
                Some('&') => self.separator(ShellFeature::List, 2)?,
                Some('>') => {
                    let len = if self.peek(2) == Some('>') { 3 } else { 2 };
                    self.redirection(ShellFeature::Redirection, len, None)?;
                }
                _ => self.separator(ShellFeature::Background, 1)?,
            },
            '|' => match self.peek(1) {
                Some('|') => self.separator(ShellFeature::List, 2)?,
                Some('&') => self.separator(ShellFeature::Pipeline, 2)?,
                _ => self.separator(ShellFeature::Pipeline, 1)?,
            },
            '(' => {
                self.separator(ShellFeature::Subshell, 1)?;
                self.cmd()?.parens += 1;
            }
            ')' => {
                let pos = self.pos;
                let frame = self.before_operator()?;
                if frame.parens > 0 {
                    frame.parens -= 1;
                    frame.cmd_pos = false;
                    frame.has_word = true;
                } else if frame.closer == Closer::Top {
                    return Err(format!("unmatched `)` at character {pos}"));
                } else {
                    // Closes `$(` or `<(`: back to the enclosing frame, whose word was
                    // already marked as expanded when the substitution opened.
                    self.stack.pop();
                }
                self.pos += 1;
            }
            '<' | '>' if self.peek(1) == Some('(') => {
                self.finish_word()?;
                self.feature(ShellFeature::ProcessSubstitution);
                self.cmd()?.word.mark_expansion();
                self.push_frame(Frame::Command(CmdFrame::new(Closer::Process)))?;
                self.pos += 2;
            }
            '<' => match (self.peek(1), self.peek(2)) {
                (Some('<'), Some('<')) => self.redirection(ShellFeature::Heredoc, 3, None)?,
                (Some('<'), Some('-')) => {
                    self.redirection(ShellFeature::Heredoc, 3, Some(true))?;
                }
                (Some('<'), _) => self.redirection(ShellFeature::Heredoc, 2, Some(false))?,
                (Some('&' | '>'), _) => self.redirection(ShellFeature::Redirection, 2, None)?,
                _ => self.redirection(ShellFeature::Redirection, 1, None)?,
            },
            '>' => match self.peek(1) {
                Some('>' | '&' | '|') => self.redirection(ShellFeature::Redirection, 2, None)?,
                _ => self.redirection(ShellFeature::Redirection, 1, None)?,
            },
            _ => {
                self.push_char(c, false)?;
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// After a newline: skip the bodies of the here-documents opened on that line, in order.
    fn read_heredocs(&mut self) -> Step {
        while let Some((delim, strip)) = self.heredocs.pop_front() {
            loop {
                if self.pos >= self.chars.len() {
                    return Err(format!(
                        "here-document delimited by `{delim}` is not terminated"
                    ));
                }
                let start = self.pos;
                let end = self.chars[start..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(self.chars.len(), |n| start + n);
                let mut line = &self.chars[start..end];
                if strip {
                    while let [first, rest @ ..] = line {
                        if *first != '\t' {
                            break;
                        }
                        line = rest;
                    }
                }
                let done = line.iter().copied().eq(delim.chars());
                self.pos = end.saturating_add(1).min(self.chars.len());
                if done {
                    break;
                }
            }
        }
        Ok(())
    }

    fn single_quote(&mut self) -> Step {
        let start = self.pos;
        let Some(len) = self.chars[start + 1..].iter().position(|&c| c == '\'') else {
            return Err(format!("unterminated single quote at character {start}"));
        };
        let Lexer {
            stack,
            features,
            chars,
            ..
        } = self;
        let frame = stack
            .iter_mut()
            .rev()
            .find_map(|f| match f {
                Frame::Command(c) => Some(c),
                _ => None,
            })
            .ok_or_else(internal)?;
        frame.word.mark_quoted();
        for &c in &chars[start + 1..start + 1 + len] {
            frame.word.push(c, true, features);
        }
        self.pos = start + len + 2;
        Ok(())
    }

    fn backtick(&mut self) -> Step {
        self.feature(ShellFeature::CommandSubstitution);
        self.cmd()?.word.mark_expansion();
        self.push_frame(Frame::Backtick)?;
        self.pos += 1;
        Ok(())
    }

    /// `$` in command context, inside double quotes (`in_dq`), or inside `${`/`$((`.
    fn dollar(&mut self, in_dq: bool) -> Step {
        let start = self.pos;
        let next = self.peek(1);
        let expansion = |lexer: &mut Self, f: ShellFeature| -> Step {
            lexer.feature(f);
            lexer.cmd()?.word.mark_expansion();
            Ok(())
        };
        match next {
            Some('\'') if !in_dq => {
                expansion(self, ShellFeature::AnsiCQuoting)?;
                // Inside `$'...'` a backslash escapes anything, including `'`.
                let mut i = start + 2;
                loop {
                    match self.chars.get(i) {
                        None => {
                            return Err(format!("unterminated `$'` quote at character {start}"));
                        }
                        Some('\\') => i += 2,
                        Some('\'') => break,
                        Some(_) => i += 1,
                    }
                }
                self.pos = i + 1;
            }
            Some('"') if !in_dq => {
                expansion(self, ShellFeature::LocaleQuoting)?;
                self.push_frame(Frame::DoubleQuote)?;
                self.pos += 2;
            }
            Some('(') if self.peek(2) == Some('(') => {
                expansion(self, ShellFeature::ArithmeticExpansion)?;
                self.push_frame(Frame::Arith {
                    depth: 0,
                    bracket: false,
                    in_dq,
                })?;
                self.pos += 3;
            }
            Some('(') => {
                expansion(self, ShellFeature::CommandSubstitution)?;
                self.push_frame(Frame::Command(CmdFrame::new(Closer::Dollar)))?;
                self.pos += 2;
            }
            Some('[') => {
                expansion(self, ShellFeature::ArithmeticExpansion)?;
                self.push_frame(Frame::Arith {
                    depth: 0,
                    bracket: true,
                    in_dq,
                })?;
                self.pos += 2;
            }
            Some('{') => {
                expansion(self, ShellFeature::VariableExpansion)?;
                self.push_frame(Frame::Param { depth: 0, in_dq })?;
                self.pos += 2;
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                expansion(self, ShellFeature::VariableExpansion)?;
                self.pos += 2;
                while self
                    .peek(0)
                    .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
                {
                    self.pos += 1;
                }
            }
            Some(c)
                if c.is_ascii_digit() || matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!') =>
            {
                expansion(self, ShellFeature::VariableExpansion)?;
                self.pos += 2;
            }
            // A `$` that starts no expansion is literal in every POSIX shell when it ends
            // the word (blank, newline, operator, end of input, or the closing `"`).
            None | Some(' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | ')') => {
                self.push_char('$', in_dq)?;
                self.pos += 1;
            }
            // Inside double quotes `$'` and `$"` are a literal `$` (and a quote).
            Some('"' | '\'') => {
                self.push_char('$', in_dq)?;
                self.pos += 1;
            }
            Some(c) => {
                return Err(format!(
                    "`${c}` at character {start} is not a supported expansion; quote the `$`"
                ));
            }
        }
        Ok(())
    }

    fn dq_char(&mut self, c: char) -> Step {
        match c {
            '"' => {
                self.stack.pop();
                self.pos += 1;
            }
            '\\' => match self.peek(1) {
                None => return Err("unterminated double quote".to_string()),
                Some('\n') => self.pos += 2,
                Some(n @ ('$' | '`' | '"' | '\\')) => {
                    self.push_char(n, true)?;
                    self.pos += 2;
                }
                Some(_) => {
                    // Any other backslash is literal inside double quotes.
                    self.push_char('\\', true)?;
                    self.pos += 1;
                }
            },
            '$' => self.dollar(true)?,
            '`' => self.backtick()?,
            _ => {
                self.push_char(c, true)?;
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// Inside `${...}`, `$((...))` or `$[...]`: find the end, following nested quotes and
    /// expansions; the contents are not modelled (the command is compound already).
    fn expr_char(&mut self, c: char) -> Step {
        let start = self.pos;
        let Some(Frame::Param { in_dq, .. } | Frame::Arith { in_dq, .. }) = self.stack.last()
        else {
            return Err(internal());
        };
        let in_dq = *in_dq;
        match c {
            '\\' => {
                if self.peek(1).is_none() {
                    return Err(format!("unterminated expansion at character {start}"));
                }
                self.pos += 2;
            }
            '\'' if !in_dq => {
                let Some(len) = self.chars[start + 1..].iter().position(|&c| c == '\'') else {
                    return Err(format!("unterminated single quote at character {start}"));
                };
                self.pos = start + len + 2;
            }
            '"' => {
                self.push_frame(Frame::DoubleQuote)?;
                self.pos += 1;
            }
            '$' => self.dollar(in_dq)?,
            '`' => self.backtick()?,
            _ => {
                let next = self.peek(1);
                let Some(top) = self.stack.last_mut() else {
                    return Err(internal());
                };
                let mut pop = false;
                let mut len = 1;
                match (top, c) {
                    (Frame::Param { depth, .. }, '{') => *depth += 1,
                    (Frame::Param { depth, .. }, '}') => match depth.checked_sub(1) {
                        Some(d) => *depth = d,
                        None => pop = true,
                    },
                    (
                        Frame::Arith {
                            depth,
                            bracket: false,
                            ..
                        },
                        '(',
                    ) => *depth += 1,
                    (
                        Frame::Arith {
                            depth,
                            bracket: false,
                            ..
                        },
                        ')',
                    ) => match depth.checked_sub(1) {
                        Some(d) => *depth = d,
                        None if next == Some(')') => {
                            pop = true;
                            len = 2;
                        }
                        None => {
                            return Err(format!(
                                "malformed arithmetic expansion at character {start}"
                            ));
                        }
                    },
                    (
                        Frame::Arith {
                            depth,
                            bracket: true,
                            ..
                        },
                        '[',
                    ) => *depth += 1,
                    (
                        Frame::Arith {
                            depth,
                            bracket: true,
                            ..
                        },
                        ']',
                    ) => match depth.checked_sub(1) {
                        Some(d) => *depth = d,
                        None => pop = true,
                    },
                    _ => {}
                }
                if pop {
                    self.stack.pop();
                }
                self.pos += len;
            }
        }
        Ok(())
    }

    /// Inside backticks: find the closing one (a backslash escapes the next character).
    fn backtick_char(&mut self, c: char) -> Step {
        match c {
            '\\' => {
                if self.peek(1).is_none() {
                    return Err("unterminated backtick command substitution".to_string());
                }
                self.pos += 2;
            }
            '`' => {
                self.stack.pop();
                self.pos += 1;
            }
            _ => self.pos += 1,
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Wrappers
// ---------------------------------------------------------------------------------------

mod effects;
mod wrappers;
use effects::*;
pub use effects::{CommandEffect, normalize_path};
pub use wrappers::inner_commands;
use wrappers::*;

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
