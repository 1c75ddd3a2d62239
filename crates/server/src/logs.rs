//! A node's log as its owner may see it: the runtime's `LOGS`, with secrets replaced, and, when
//! followed, only the lines new since the last read. Pure functions; `routes::nodes` carries
//! them out.

/// What stands in for a secret.
pub(crate) const REDACTED: &str = "[redacted]";

/// The longest line kept (a node printing a megabyte on one line gets it cut).
pub(crate) const MAX_LINE_BYTES: usize = 4096;

/// `line` with every secret in it replaced: the given ones (the node's password, its user's
/// token), and what looks like one wherever it comes from — credentials in URLs
/// (`scheme://user:secret@`), `Authorization: Basic|Bearer …`, `password=`/`passwd=`/`secret=`/
/// `token=`/`api_key=` values, and private keys (`0x` + 64 hex digits).
pub(crate) fn redact(line: &str, secrets: &[&str]) -> String {
    let mut out = erigolem_store::cap_text(line, MAX_LINE_BYTES).into_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, REDACTED);
    }
    out = redact_url_credentials(&out);
    out = redact_after(
        &out,
        &[
            "authorization: basic ",
            "authorization: bearer ",
            "authorization=basic ",
            "authorization=bearer ",
        ],
    );
    out = redact_after(
        &out,
        &[
            "password=",
            "password:",
            "password\":\"",
            "passwd=",
            "secret=",
            "token=",
            "api_key=",
            "apikey=",
            "private_key=",
            "--password ",
            "--private-key ",
        ],
    );
    redact_private_keys(&out)
}

/// `scheme://user:secret@host` → `scheme://user:[redacted]@host`.
fn redact_url_credentials(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// The value after each (case-insensitive) `marker`, up to whitespace, a quote, `&`, `,` or `;`.
fn redact_after(line: &str, markers: &[&str]) -> String {
    let lower = line.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for marker in markers {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            let len = line[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '&' | ',' | ';'))
                .unwrap_or(line.len() - start);
            if len > 0 {
                cuts.push((start, start + len));
            }
            from = start;
        }
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            continue;
        }
        out.push_str(&line[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&line[at..]);
    out
}

/// `0x` followed by exactly 64 hex digits (a secp256k1 private key; also a 32-byte hash, which
/// a log shows often — a hash is not secret, but a key must never be shown, so both go).
fn redact_private_keys(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let mut copied = 0;
    while i + 2 <= bytes.len() {
        if bytes[i] == b'0' && (bytes[i + 1] == b'x' || bytes[i + 1] == b'X') {
            let digits = bytes[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if digits == 64 && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
                out.push_str(&line[copied..i]);
                out.push_str(REDACTED);
                i += 2 + digits;
                copied = i;
                continue;
            }
            i += 2 + digits;
            continue;
        }
        i += 1;
    }
    out.push_str(&line[copied..]);
    out
}

/// The lines of `now` that come after what `before` ended with: the longest tail of `before`
/// that `now` starts with is skipped. When nothing overlaps (the log moved on by more than a
/// read), all of `now` is new.
pub(crate) fn new_lines<'a>(before: &[String], now: &'a [String]) -> &'a [String] {
    for overlap in (1..=before.len().min(now.len())).rev() {
        if before[before.len() - overlap..] == now[..overlap] {
            return &now[overlap..];
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let cases: &[(&str, &str)] = &[
            ("plain INFO line", "plain INFO line"),
            (
                "auth for n1 with Pa55w0rd-xyz ok",
                "auth for n1 with [redacted] ok",
            ),
            (
                "dial http://n1:hunter22@127.0.0.1:8545/x failed",
                "dial http://n1:[redacted]@127.0.0.1:8545/x failed",
            ),
            (
                "url http://127.0.0.1:8545/ ok",
                "url http://127.0.0.1:8545/ ok",
            ),
            (
                "Authorization: Bearer abc.def.ghi sent",
                "Authorization: Bearer [redacted] sent",
            ),
            (
                "authorization: basic bjE6cA== sent",
                "authorization: basic [redacted] sent",
            ),
            (
                "--password hunter2 --port 1",
                "--password [redacted] --port 1",
            ),
            (
                "cfg password=abc&user=n1",
                "cfg password=[redacted]&user=n1",
            ),
            (
                "key 0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318 loaded",
                "key [redacted] loaded",
            ),
            ("block 0x1b4 at 0xabc", "block 0x1b4 at 0xabc"),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line, &["Pa55w0rd-xyz"]), *want, "{line}");
        }
    }

    #[test]
    fn a_huge_line_is_cut() {
        let line = "x".repeat(1_000_000);
        assert!(redact(&line, &[]).len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn following_yields_only_new_lines() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            new_lines(&v(&["a", "b", "c"]), &v(&["b", "c", "d"])),
            v(&["d"]).as_slice()
        );
        assert_eq!(
            new_lines(&v(&["a", "b"]), &v(&["a", "b"])),
            v(&[]).as_slice()
        );
        assert_eq!(new_lines(&v(&[]), &v(&["a"])), v(&["a"]).as_slice());
        assert_eq!(
            new_lines(&v(&["a"]), &v(&["x", "y"])),
            v(&["x", "y"]).as_slice()
        );
    }
}
