//! The examples of the docs are real: every fenced block of `docs/*.md` and `README.md` that
//! the convention of docs/contract.md ("Examples in these docs") marks is checked here.
//!
//! - ```` ```json ```` (an illustration) and ```` ```json config ```` (a whole program
//!   config) must parse as JSON; a config must be `{"programs": [...]}`;
//! - every non-blank line of a ```` ```jsonl ... ```` block must parse as JSON;
//! - ```` ```jsonl events ```` is folded with `loyalty fold` under the nearest
//!   ```` ```json config ```` block before it in the same file: exit code 0, and no
//!   `rejected` line unless the block is ```` ```jsonl events rejects ```` (which must then
//!   print at least one);
//! - ```` ```jsonl output ```` must come right after an events block (the next fenced
//!   block), and is exactly what the fold of that block prints.
//!
//! Other blocks (`sh`, `text`, untagged, …) are not checked.

use std::path::{Path, PathBuf};

use crate::support::{fold, lines, of_kind};

/// A fenced block of a Markdown file.
struct Block {
    /// The words of the info string (` ```jsonl events rejects ` gives three).
    info: Vec<String>,
    /// The lines between the fences, each ending in a newline.
    text: String,
    /// The line of the opening fence (1-based), for messages.
    line: usize,
}

/// The fence that opens or closes a block: three or more backticks or tildes. As in
/// CommonMark, backticks followed by more backticks on the same line are no fence (they are
/// inline code at the start of a line).
fn fence_of(trimmed: &str) -> Option<&str> {
    let first = trimmed.chars().next()?;
    if first != '`' && first != '~' {
        return None;
    }
    let len = trimmed.chars().take_while(|c| *c == first).count();
    if len < 3 || (first == '`' && trimmed[len..].contains('`')) {
        return None;
    }
    Some(&trimmed[..len])
}

/// Every fenced block of a Markdown text, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    // The open block: its fence, the indentation of its fence, and the block so far.
    let mut open: Option<(String, usize, Block)> = None;
    for (n, raw) in markdown.lines().enumerate() {
        let trimmed = raw.trim_start_matches(' ');
        let indent = raw.len() - trimmed.len();
        match open.take() {
            None => {
                if let Some(fence) = fence_of(trimmed) {
                    let info = trimmed[fence.len()..]
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    let block = Block {
                        info,
                        text: String::new(),
                        line: n + 1,
                    };
                    open = Some((fence.to_string(), indent, block));
                }
            }
            Some((fence, fence_indent, mut block)) => {
                let closes = fence_of(trimmed).is_some_and(|f| {
                    f.starts_with(fence.as_str()) && trimmed[f.len()..].trim().is_empty()
                });
                if closes {
                    out.push(block);
                } else {
                    // Content keeps what is indented beyond the fence's own indentation.
                    let strip = indent.min(fence_indent);
                    block.text.push_str(&raw[strip..]);
                    block.text.push('\n');
                    open = Some((fence, fence_indent, block));
                }
            }
        }
    }
    if let Some((_, _, block)) = open {
        // An unclosed fence runs to the end of the file, as in CommonMark.
        out.push(block);
    }
    out
}

/// The files whose examples are checked: every `docs/*.md`, sorted, and `README.md`.
fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files.push(root.join("README.md"));
    files
}

/// How many blocks of each kind were checked.
#[derive(Default)]
struct Counts {
    json: usize,
    configs: usize,
    events: usize,
    rejects: usize,
    outputs: usize,
}

/// Checks one file's blocks, adding a message to `failures` for each that fails.
fn check_file(path: &Path, counts: &mut Counts, failures: &mut Vec<String>) {
    let name = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string();
    let markdown =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
    let mut fail =
        |line: usize, message: String| failures.push(format!("{name}:{line}: {message}"));
    // The nearest `json config` block so far.
    let mut config: Option<String> = None;
    // The previous block, when it was an events block: its line and what the fold printed.
    let mut previous_events: Option<(usize, String)> = None;
    for block in blocks(&markdown) {
        let words: Vec<&str> = block.info.iter().map(String::as_str).collect();
        let last_events = previous_events.take();
        match words.as_slice() {
            ["json", rest @ ..] => {
                counts.json += 1;
                let value: serde_json::Value = match serde_json::from_str(&block.text) {
                    Ok(v) => v,
                    Err(e) => {
                        fail(block.line, format!("a json block does not parse: {e}"));
                        continue;
                    }
                };
                if rest.contains(&"config") {
                    counts.configs += 1;
                    if !value["programs"].is_array() {
                        fail(
                            block.line,
                            "a json config block is not {\"programs\": [...]}".to_string(),
                        );
                    }
                    config = Some(block.text.clone());
                }
            }
            ["jsonl", rest @ ..] => {
                let mut parses = true;
                for (i, l) in block.text.lines().enumerate() {
                    if l.trim().is_empty() {
                        continue;
                    }
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(l) {
                        fail(
                            block.line + 1 + i,
                            format!("a jsonl line does not parse ({e}): {l}"),
                        );
                        parses = false;
                    }
                }
                match rest.first().copied() {
                    Some("events") => {
                        counts.events += 1;
                        let rejects = rest.contains(&"rejects");
                        if rejects {
                            counts.rejects += 1;
                        }
                        if !parses {
                            continue;
                        }
                        let Some(config) = &config else {
                            fail(
                                block.line,
                                "an events block with no json config block before it".into(),
                            );
                            continue;
                        };
                        let out = fold(config, &block.text, None);
                        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                        if out.status.code() != Some(0) {
                            fail(
                                block.line,
                                format!(
                                    "the fold exited with {:?}: {}",
                                    out.status.code(),
                                    String::from_utf8_lossy(&out.stderr)
                                ),
                            );
                            continue;
                        }
                        let printed = lines(&out);
                        let rejected = of_kind(&printed, "rejected");
                        if !rejects && !rejected.is_empty() {
                            fail(
                                block.line,
                                format!(
                                    "the fold rejected records (mark the block `jsonl events \
                                     rejects` if that is meant): {}",
                                    serde_json::Value::Array(
                                        rejected.into_iter().cloned().collect()
                                    )
                                ),
                            );
                        } else if rejects && rejected.is_empty() {
                            fail(
                                block.line,
                                "a `jsonl events rejects` block rejected nothing".into(),
                            );
                        }
                        previous_events = Some((block.line, stdout));
                    }
                    Some("output") => {
                        counts.outputs += 1;
                        match last_events {
                            None => fail(
                                block.line,
                                "a jsonl output block that does not follow a jsonl events \
                                 block"
                                    .into(),
                            ),
                            Some((events_line, stdout)) => {
                                if stdout != block.text {
                                    fail(
                                        block.line,
                                        format!(
                                            "the fold of the events block of line \
                                             {events_line} prints something else:\n\
                                             --- expected\n{}--- printed\n{stdout}",
                                            block.text
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[test]
fn the_examples_of_the_docs_are_real() {
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for path in files() {
        check_file(&path, &mut counts, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} example(s) of the docs fail:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // The convention is in use: a parser that found nothing would pass vacuously.
    assert!(counts.json > 0, "no json block found");
    assert!(counts.configs > 0, "no json config block found");
    assert!(counts.events > 0, "no jsonl events block found");
    assert!(counts.rejects > 0, "no jsonl events rejects block found");
    assert!(counts.outputs > 0, "no jsonl output block found");
}

#[test]
fn blocks_are_found_with_their_info_strings() {
    let md = "text\n```json config\n{\"programs\": []}\n```\n\n  ```jsonl events rejects\n  {\"a\": 1}\n  ```\n  ```` ```json ```` is inline code\n````\n```\n````\n";
    let b = blocks(md);
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].info, ["json", "config"]);
    assert_eq!(b[0].text, "{\"programs\": []}\n");
    assert_eq!(b[0].line, 2);
    assert_eq!(b[1].info, ["jsonl", "events", "rejects"]);
    assert_eq!(b[1].text, "{\"a\": 1}\n");
    assert!(b[2].info.is_empty());
    assert_eq!(b[2].text, "```\n");
}
