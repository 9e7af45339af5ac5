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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
        CommandFacts {
            program: argv.first().cloned(),
            argv: Some(argv),
            wrapper,
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

const PRIVILEGE: &[&str] = &[
    "sudo", "sudoedit", "doas", "su", "pkexec", "runuser", "sg", "newgrp", "setpriv", "capsh",
];

/// Compared after lowercasing and stripping a version suffix (`ksh93` → `ksh`).
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "lksh", "oksh", "pdksh", "ash", "csh", "tcsh",
    "fish", "yash", "posh", "rbash", "elvish", "nu", "xonsh",
];

/// Compared after lowercasing and stripping a version suffix (`python3.12` → `python`).
#[rustfmt::skip]
const INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "irb", "node", "nodejs", "deno", "bun", "php", "lua",
    "luajit", "awk", "gawk", "mawk", "nawk", "tclsh", "wish", "expect", "rscript", "pwsh",
    "powershell", "osascript", "julia", "guile", "racket", "jshell", "java", "groovy",
    "scala", "ocaml", "sbcl", "clisp", "swipl", "erl", "escript", "elixir", "iex",
];

#[rustfmt::skip]
const RUNNERS: &[&str] = &[
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
const EXEC_SUBCOMMAND_TOOLS: &[&str] = &[
    "docker", "podman", "nerdctl", "kubectl", "oc", "crictl", "ip",
];
const EXEC_SUBCOMMANDS: &[&str] = &["exec", "run", "debug", "attach"];

/// Higher is more severe; a chain reports its most severe wrapper. Privilege ranks first:
/// `sudo sh -c x` is above all a privilege escalation.
fn severity(w: Wrapper) -> u8 {
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

fn more_severe(a: Option<Wrapper>, b: Option<Wrapper>) -> Option<Wrapper> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if severity(y) > severity(x) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `python3.12` → `python`, `ksh93` → `ksh`, `perl5.36.0` → `perl`.
fn strip_version(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
}

/// The wrapper an argv is, looking through wrapper chains (`env`, `sudo`, `nohup`, `xargs`,
/// `find -exec`, ...) for a more severe one. Instead of parsing each wrapper's options, every
/// later argument is tried as the inner program: over-inclusive (`xargs grep sh` reports
/// `ShellC`), but no option syntax can hide the inner command. An argument with blanks is
/// also split into words and tried, for commands given as one string (`env -S 'sh -c x'`,
/// `ssh host 'sudo rm x'`, `watch 'bash x'`).
fn wrapper_of(argv: &[String]) -> Option<Wrapper> {
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

/// The wrapper `args[0]` is, given its arguments; checks the literal name and its basename.
fn classify(args: &[String]) -> Option<Wrapper> {
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

fn classify_name(name: &str, rest: &[String]) -> Option<Wrapper> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.as_str();
    let stem = strip_version(lower);
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
            a.starts_with("--rsh")
                || a.starts_with("--rsync-path")
                || (a.starts_with('-') && !a.starts_with("--") && a.contains('e'))
        });
        return runs.then_some(Wrapper::Runner);
    }
    if lower == "tar" {
        let runs = rest.iter().enumerate().any(|(i, a)| {
            a.starts_with("--to-command")
                || a.starts_with("--use-compress-program")
                || a.starts_with("--checkpoint-action")
                || a.starts_with("--info-script")
                || a.starts_with("--new-volume-script")
                || a.starts_with("--rmt-command")
                || a.starts_with("--rsh-command")
                || (((a.starts_with('-') && !a.starts_with("--")) || i == 0)
                    && (a.contains('I') || a.contains('F')))
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
fn info_only(rest: &[String], flags: &[&str]) -> bool {
    matches!(rest, [one] if flags.contains(&one.as_str()))
}

/// Whether a `sed` invocation could execute commands: GNU sed's `e` command and the `s///e`
/// flag run a shell. Scripts are not parsed: any script containing `e` counts, as does a
/// script file (`-f`), a missing script, or an option not known here. `--sandbox` (which
/// rejects `e`, `r` and `w`) makes it safe.
fn sed_runs_code(rest: &[String]) -> bool {
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

#[cfg(test)]
mod tests {
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
            'a', 'Z', '0', ' ', '\t', '\n', '\'', '"', '\\', '$', '`', '*', '?', '[', ']', '{',
            '}', ',', '.', '~', '#', '=', '!', ';', '&', '|', '(', ')', '<', '>', '-', '/', '%',
            '@', '+', ':', '^', 'é', '日', '😀', '\u{a0}',
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
            "a", " ", "\n", "'", "\"", "\\", "$", "`", "(", ")", "{", "}", "[", "]", "$(", "${",
            "$((", "))", "<<", "EOF", "<(", "|", "&", ";", "#", "~", "*", "=", "é", "\t", "-",
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
}
