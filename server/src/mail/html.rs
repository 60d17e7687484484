//! A forward scanner of rendered HTML: text, start and end tags (with their attributes found on
//! demand) and everything else, each with where it starts, in one pass without building a tree
//! or copying. Every message needs its links rewritten and a text part, and an HTML rewriter that
//! materialises and re-serialises each matched element cost two thirds of rendering a
//! newsletter (BENCHMARKS.md, mail_throughput); this reads only what those two need and leaves
//! the bytes it does not change where they are.
//!
//! It follows the tokenizer of the HTML standard where that decides what is text and what is a
//! tag: comments, doctypes and other `<!…>`/`<?…>` constructs are not text; the contents of
//! `script`, `style`, `title`, `textarea` and the like are text up to their own end tag; quoted
//! attribute values may hold `>`; a `<` that starts no tag is text. Character references are
//! left as written (callers unescape what they keep).

use std::ops::Range;

/// Elements whose content is text up to their own end tag (RAWTEXT, RCDATA and script data).
const RAW_TEXT: [&str; 8] = ["script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes"];

/// One piece of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// Text as written, character references included.
    Text(&'a str),
    Start(Tag<'a>),
    End {
        name: &'a str,
    },
    /// A comment, doctype, processing instruction or stray `</…>`.
    Other,
}

/// A start tag: its name as written and its attributes, read when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    pub name: &'a str,
    html: &'a str,
    /// Where the attributes start (just after the name) and where the tag's `>` is (ends).
    attributes_start: usize,
    attributes_end: usize,
}

/// An attribute's value as written (quotes removed, references not decoded) and where it is,
/// quotes included: replacing that range replaces the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub value: &'a str,
    pub span: Range<usize>,
}

impl<'a> Tag<'a> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The first attribute of that name (browsers ignore repeats), in any case.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'a>> {
        let bytes = self.html.as_bytes();
        let mut at = self.attributes_start;
        let end = self.attributes_end;
        loop {
            at = skip(bytes, at, end, |byte| is_space(byte) || byte == b'/');
            if at >= end {
                return None;
            }
            // A name may start with `=`; only later ones end it.
            let name_start = at;
            at = skip(bytes, at + 1, end, |byte| !(is_space(byte) || matches!(byte, b'/' | b'>' | b'=')));
            let attribute_name = &self.html[name_start..at];
            let after_name = at;
            at = skip(bytes, at, end, is_space);
            let found = attribute_name.eq_ignore_ascii_case(name);
            if at >= end || bytes[at] != b'=' {
                if found {
                    return Some(Attribute { value: "", span: after_name..after_name });
                }
                continue;
            }
            at = skip(bytes, at + 1, end, is_space);
            let (value, span) = match bytes.get(at) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let close = memchr::memchr(quote, &bytes[at + 1..end]).map_or(end, |offset| at + 1 + offset);
                    (at + 1..close, at..(close + 1).min(end))
                }
                _ => {
                    let close = skip(bytes, at, end, |byte| !is_space(byte));
                    (at..close, at..close)
                }
            };
            at = span.end;
            if found {
                return Some(Attribute { value: &self.html[value], span });
            }
        }
    }
}

/// The tokens of `html` in order, each with the offset where it starts.
pub struct Tokens<'a> {
    html: &'a str,
    at: usize,
    /// Inside an element whose content is text: its name, which alone can end it.
    raw_text_of: Option<&'static str>,
}

impl<'a> Tokens<'a> {
    pub fn new(html: &'a str) -> Self {
        Self { html, at: 0, raw_text_of: None }
    }

    fn text_until(&mut self, end: usize) -> Token<'a> {
        let text = &self.html[self.at..end];
        self.at = end;
        Token::Text(text)
    }

    /// The end of the raw text that started at `self.at`: the next `</name` followed by a space,
    /// `/` or `>`, in any case, or the end of the document.
    fn raw_text_end(&self, name: &str) -> usize {
        let bytes = self.html.as_bytes();
        let mut from = self.at;
        while let Some(offset) = memchr::memmem::find(&bytes[from..], b"</") {
            let start = from + offset;
            let name_end = start + 2 + name.len();
            if bytes.get(start + 2..name_end).is_some_and(|candidate| candidate.eq_ignore_ascii_case(name.as_bytes()))
                && bytes.get(name_end).is_none_or(|&byte| is_space(byte) || matches!(byte, b'/' | b'>'))
            {
                return start;
            }
            from = start + 2;
        }
        bytes.len()
    }

    /// Past the `>` at or after `from`, or the end of the document.
    fn past_next_gt(&self, from: usize) -> usize {
        memchr::memchr(b'>', &self.html.as_bytes()[from.min(self.html.len())..])
            .map_or(self.html.len(), |offset| from + offset + 1)
    }

    /// The `>` that ends a tag whose attributes start at `from` (a `>` inside a quoted value does
    /// not), or the end of the document.
    fn tag_end(&self, from: usize) -> usize {
        let bytes = self.html.as_bytes();
        let mut at = from;
        while at < bytes.len() {
            match bytes[at] {
                b'>' => return at,
                b'=' => {
                    at = skip(bytes, at + 1, bytes.len(), is_space);
                    if let Some(&quote @ (b'"' | b'\'')) = bytes.get(at) {
                        at = memchr::memchr(quote, &bytes[at + 1..]).map_or(bytes.len(), |offset| at + 1 + offset + 1);
                    }
                }
                _ => at += 1,
            }
        }
        bytes.len()
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (usize, Token<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.html.as_bytes();
        let start = self.at;
        if start >= bytes.len() {
            return None;
        }
        if let Some(name) = self.raw_text_of.take() {
            let end = self.raw_text_end(name);
            if end > start {
                return Some((start, self.text_until(end)));
            }
        }
        if bytes[start] != b'<' {
            let end = memchr::memchr(b'<', &bytes[start..]).map_or(bytes.len(), |offset| start + offset);
            return Some((start, self.text_until(end)));
        }
        let token = match bytes.get(start + 1) {
            Some(byte) if byte.is_ascii_alphabetic() => {
                let name_end =
                    skip(bytes, start + 1, bytes.len(), |byte| !(is_space(byte) || matches!(byte, b'/' | b'>')));
                let end = self.tag_end(name_end);
                let tag = Tag {
                    name: &self.html[start + 1..name_end],
                    html: self.html,
                    attributes_start: name_end,
                    attributes_end: end,
                };
                self.at = (end + 1).min(bytes.len());
                self.raw_text_of = RAW_TEXT.iter().copied().find(|raw| tag.is(raw));
                Token::Start(tag)
            }
            Some(b'/') if bytes.get(start + 2).is_some_and(u8::is_ascii_alphabetic) => {
                let name_end =
                    skip(bytes, start + 2, bytes.len(), |byte| !(is_space(byte) || matches!(byte, b'/' | b'>')));
                self.at = (self.tag_end(name_end) + 1).min(bytes.len());
                Token::End { name: &self.html[start + 2..name_end] }
            }
            Some(b'!') if bytes[start..].starts_with(b"<!--") => {
                // `<!-->` and `<!--->` are whole (empty) comments.
                let body = start + 4;
                self.at = if bytes[body..].starts_with(b">") {
                    body + 1
                } else if bytes[body..].starts_with(b"->") {
                    body + 2
                } else {
                    memchr::memmem::find(&bytes[body..], b"-->").map_or(bytes.len(), |offset| body + offset + 3)
                };
                Token::Other
            }
            Some(b'!' | b'?' | b'/') => {
                self.at = self.past_next_gt(start + 2);
                Token::Other
            }
            // A `<` that starts nothing is text, with whatever follows it up to the next `<`.
            _ => {
                let end = memchr::memchr(b'<', &bytes[start + 1..]).map_or(bytes.len(), |offset| start + 1 + offset);
                self.text_until(end)
            }
        };
        Some((start, token))
    }
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// The first position from `at` (up to `end`) whose byte does not satisfy `while_`.
fn skip(bytes: &[u8], mut at: usize, end: usize, while_: impl Fn(u8) -> bool) -> usize {
    while at < end && while_(bytes[at]) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(html: &str) -> Vec<Token<'_>> {
        Tokens::new(html).map(|(_, token)| token).collect()
    }

    fn texts(html: &str) -> String {
        tokens(html)
            .into_iter()
            .filter_map(|token| match token {
                Token::Text(text) => Some(text),
                _ => None,
            })
            .collect()
    }

    fn names(html: &str) -> Vec<String> {
        tokens(html)
            .into_iter()
            .filter_map(|token| match token {
                Token::Start(tag) => Some(tag.name.to_owned()),
                Token::End { name } => Some(format!("/{name}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tags_text_and_offsets_come_in_document_order() {
        let html = "<p class=x>Hi <b>there</b></p>";
        let found: Vec<(usize, Token<'_>)> = Tokens::new(html).collect();
        let starts: Vec<usize> = found.iter().map(|(at, _)| *at).collect();
        assert_eq!(starts, [0, 11, 14, 17, 22, 26]);
        assert_eq!(names(html), ["p", "b", "/b", "/p"]);
        assert_eq!(texts(html), "Hi there");
    }

    #[test]
    fn comments_doctypes_and_stray_markup_are_not_text() {
        let html = "<!DOCTYPE html><!-- a <b> c -->x<!---->y<!-->z<?php no ?>w</ >v<![CDATA[u]]>t";
        assert_eq!(texts(html), "xyzwvt");
        assert!(names(html).is_empty());
        assert_eq!(texts("a < b and c<3 <"), "a < b and c<3 <");
        assert_eq!(texts("<!-- never closed <p>hidden"), "");
    }

    #[test]
    fn a_quoted_value_may_hold_a_greater_than_sign() {
        let html = r#"<a title="1 > 0" href='/x>y'>link</a>"#;
        assert_eq!(texts(html), "link");
        let Token::Start(tag) = tokens(html)[0] else { panic!("not a tag") };
        assert_eq!(tag.attribute("HREF").unwrap().value, "/x>y");
        assert_eq!(tag.attribute("title").unwrap().value, "1 > 0");
    }

    #[test]
    fn attributes_are_found_quoted_unquoted_bare_and_first_of_repeats() {
        let html = r#"<A Href = "one" href="two" data-x=plain checked alt='a "b"'/>"#;
        let Token::Start(tag) = tokens(html)[0] else { panic!("not a tag") };
        assert!(tag.is("a"));
        let href = tag.attribute("href").unwrap();
        assert_eq!(href.value, "one");
        assert_eq!(&html[href.span.clone()], r#""one""#);
        let plain = tag.attribute("data-x").unwrap();
        assert_eq!((plain.value, &html[plain.span]), ("plain", "plain"));
        assert_eq!(tag.attribute("checked").unwrap().value, "");
        assert_eq!(tag.attribute("alt").unwrap().value, r#"a "b""#);
        assert_eq!(tag.attribute("missing"), None);
    }

    #[test]
    fn raw_text_runs_to_its_own_end_tag_only() {
        let html = "<style>p > a { }</p></STYLE >after<script>if (a<b) '</scripts>'</script>x<title>A <b>&amp;</title>";
        let found = tokens(html);
        assert_eq!(found[1], Token::Text("p > a { }</p>"));
        assert_eq!(found[2], Token::End { name: "STYLE" });
        assert_eq!(found[5], Token::Text("if (a<b) '</scripts>'"));
        assert_eq!(names(html), ["style", "/STYLE", "script", "/script", "title", "/title"]);
        assert_eq!(texts("<textarea>unclosed <p>"), "unclosed <p>");
    }

    #[test]
    fn a_tag_cut_off_by_the_end_of_the_document_ends_it() {
        assert_eq!(names("<p>x<a href=\"unclosed"), ["p", "a"]);
        assert_eq!(names("x</p"), ["/p"]);
    }

    proptest::proptest! {
        /// Every byte belongs to exactly one token, in order, whatever the input.
        #[test]
        fn tokens_cover_the_document_without_gaps(html in "(<|>|/|!|-|=|\"|'| |a|p|b|script|style|x|&)*") {
            let starts: Vec<usize> = Tokens::new(&html).map(|(at, _)| at).collect();
            proptest::prop_assert!(html.is_empty() || starts.first() == Some(&0));
            proptest::prop_assert!(starts.windows(2).all(|pair| pair[0] < pair[1]));
            proptest::prop_assert!(starts.last().is_none_or(|&last| last < html.len()));
        }
    }
}
