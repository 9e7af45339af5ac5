//! Minimal glob matching for names: `*` matches any run of characters, `?` one character.
//! No character classes, no escapes: names in rules are plain identifiers.

/// Iterative matcher with single-star backtracking: O(len(pattern) * len(text)) worst case,
/// no recursion, so hostile patterns or names cannot blow the stack.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("*", ""));
        assert!(matches("demo", "demo"));
        assert!(!matches("demo", "demo2"));
        assert!(matches("demo*", "demo2"));
        assert!(matches("*-prod", "billing-prod"));
        assert!(!matches("*-prod", "billing-prod2"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
    }
}
