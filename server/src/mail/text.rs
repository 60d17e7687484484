//! The text part of an email without one: the rendered HTML's words, one paragraph or block per
//! line, links followed by their URL in brackets, headings and layout tables without drawn
//! borders. It runs for every recipient, so it is one forward pass over the HTML's tokens
//! (`html::Tokens`) rather than a full HTML tree (html2text took two thirds of a send's CPU and
//! drew layout tables as lines of box characters), and a tracked message shares the pass that
//! rewrites its links.

use super::html::{Token, Tokens};

/// Elements whose content is not text for people: styles, scripts, the head.
const SKIPPED: [&str; 5] = ["head", "style", "script", "title", "template"];
/// Elements that start and end a line of their own.
const BLOCKS: [&str; 20] = [
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "li",
    "blockquote",
    "table",
    "ul",
    "ol",
    "section",
    "article",
    "header",
    "footer",
    "td",
    "th",
];
/// Elements that break the line where they stand.
const BREAKS: [&str; 2] = ["br", "hr"];

pub fn from_html(html: &str) -> String {
    let mut collector = TextCollector::new(html.len());
    for (_, token) in Tokens::new(html) {
        collector.feed(&token);
    }
    collector.into_text()
}

/// Collects the text part from the tokens of the HTML, so that a pass over them for another
/// reason (tracking) makes the text part too. It must see each link before it is rewritten.
pub struct TextCollector {
    /// The text as written (character references still in), decoded once at the end.
    out: String,
    /// How many skipped elements are open.
    skipping: usize,
    /// The open links: each one's web URL (decoded), if it has one, and where its text starts.
    links: Vec<Option<(String, usize)>>,
}

impl TextCollector {
    pub fn new(html_len: usize) -> Self {
        Self { out: String::with_capacity(html_len / 2), skipping: 0, links: Vec::new() }
    }

    pub fn feed(&mut self, token: &Token<'_>) {
        match token {
            Token::Text(text) if self.skipping == 0 => self.out.push_str(text),
            Token::Text(_) | Token::Other => {}
            Token::Start(tag) => {
                if is_one_of(tag.name, &SKIPPED) {
                    self.skipping += 1;
                } else if is_one_of(tag.name, &BLOCKS) || is_one_of(tag.name, &BREAKS) {
                    self.out.push('\n');
                } else if tag.is("a") {
                    let href = tag
                        .attribute("href")
                        .map(|href| htmlize::unescape_attribute(href.value).into_owned())
                        .filter(|href| href.starts_with("http://") || href.starts_with("https://"));
                    self.links.push(href.map(|href| (href, self.out.len())));
                } else if tag.is("img")
                    && let Some(alt) = tag.attribute("alt").map(|alt| htmlize::unescape_attribute(alt.value))
                    && !alt.trim().is_empty()
                {
                    self.out.push_str(&htmlize::escape_text(alt));
                }
            }
            Token::End { name } => {
                if is_one_of(name, &SKIPPED) {
                    self.skipping = self.skipping.saturating_sub(1);
                } else if is_one_of(name, &BLOCKS) {
                    self.out.push('\n');
                } else if name.eq_ignore_ascii_case("a")
                    && let Some(Some((href, start))) = self.links.pop()
                {
                    // A link whose text is its URL needs it only once.
                    if htmlize::unescape(&self.out[start..]).trim() != href {
                        self.out.push_str(" (");
                        self.out.push_str(&htmlize::escape_text(href.as_str()));
                        self.out.push(')');
                    }
                }
            }
        }
    }

    /// The text part, once every token has been fed.
    pub fn into_text(self) -> String {
        tidy(&htmlize::unescape(self.out.as_str()))
    }
}

fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|candidate| name.eq_ignore_ascii_case(candidate))
}

/// One line per block, spaces collapsed, at most one blank line in a row, none first or last.
fn tidy(text: &str) -> String {
    let mut tidied = String::with_capacity(text.len());
    let mut blank_before = false;
    for line in text.split('\n') {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            blank_before = !tidied.is_empty();
            continue;
        };
        if !tidied.is_empty() {
            tidied.push_str(if blank_before { "\n\n" } else { "\n" });
        }
        blank_before = false;
        tidied.push_str(first);
        for word in words {
            tidied.push(' ');
            tidied.push_str(word);
        }
    }
    tidied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_lines_and_links_show_their_url() {
        let html = "<html><head><title>T</title><style>p { color: red }</style></head><body>\
            <h1>Hello   Ada</h1><p>Read <a href=\"https://example.com/news?a=1&amp;b=2\">the news</a>.</p>\
            <table><tr><td>Left</td><td>Right</td></tr></table><p>Line<br>break &amp; more</p>\
            <p><a href=\"https://example.com\">https://example.com</a></p><script>alert(1)</script></body></html>";
        assert_eq!(
            from_html(html),
            "Hello Ada\n\nRead the news (https://example.com/news?a=1&b=2).\n\nLeft\n\nRight\n\nLine\nbreak & more\n\nhttps://example.com"
        );
    }

    #[test]
    fn markup_in_data_stays_text_and_alt_texts_stand_for_images() {
        assert_eq!(
            from_html("<p>Hi &lt;script&gt;</p><img src=\"x.png\" alt=\"Logo &amp; Co\">"),
            "Hi <script>\nLogo & Co"
        );
        assert_eq!(from_html("plain"), "plain");
    }

    #[test]
    fn blank_lines_collapse_to_one_and_none_starts_or_ends_the_text() {
        assert_eq!(tidy("\n \n a  b \n\n\n\tc\n \nd\n\n"), "a b\n\nc\n\nd");
        assert_eq!(tidy(" \n "), "");
    }

    /// The text part as an HTML rewriter (lol_html, the one this module used before its own
    /// scanner) sees the same document: the reference the scanner is held to.
    fn reference(html: &str) -> String {
        use std::{cell::RefCell, rc::Rc};

        use lol_html::{RewriteStrSettings, doc_text, element, end_tag, rewrite_str};

        let out = Rc::new(RefCell::new(String::new()));
        let skipping = Rc::new(RefCell::new(0usize));
        let (o1, o2, o3, o4, o5) = (out.clone(), out.clone(), out.clone(), out.clone(), out.clone());
        let (s1, s2) = (skipping.clone(), skipping.clone());
        let settings = RewriteStrSettings::new()
            .append_element_content_handler(element!(SKIPPED.join(", "), move |element| {
                *s1.borrow_mut() += 1;
                let s1 = s1.clone();
                if let Some(handlers) = element.end_tag_handlers() {
                    handlers.push(end_tag!(move |_| {
                        let mut depth = s1.borrow_mut();
                        *depth = depth.saturating_sub(1);
                        Ok(())
                    }));
                }
                Ok(())
            }))
            .append_element_content_handler(element!(BLOCKS.join(", "), move |element| {
                o1.borrow_mut().push('\n');
                let o1 = o1.clone();
                if let Some(handlers) = element.end_tag_handlers() {
                    handlers.push(end_tag!(move |_| {
                        o1.borrow_mut().push('\n');
                        Ok(())
                    }));
                }
                Ok(())
            }))
            .append_element_content_handler(element!(BREAKS.join(", "), move |_| {
                o2.borrow_mut().push('\n');
                Ok(())
            }))
            .append_element_content_handler(element!("a[href]", move |link| {
                let href = link.get_attribute("href").map(|href| htmlize::unescape_attribute(&href).into_owned());
                let start = o3.borrow().len();
                if let (Some(href), Some(handlers)) = (href, link.end_tag_handlers())
                    && (href.starts_with("http://") || href.starts_with("https://"))
                {
                    let o3 = o3.clone();
                    handlers.push(end_tag!(move |_| {
                        let mut out = o3.borrow_mut();
                        if htmlize::unescape(&out[start..]).trim() != href {
                            out.push_str(&format!(" ({})", htmlize::escape_text(href.as_str())));
                        }
                        Ok(())
                    }));
                }
                Ok(())
            }))
            .append_element_content_handler(element!("img[alt]", move |image| {
                if let Some(alt) = image.get_attribute("alt").filter(|alt| !alt.trim().is_empty()) {
                    o4.borrow_mut().push_str(&htmlize::escape_text(htmlize::unescape_attribute(&alt)));
                }
                Ok(())
            }))
            .append_document_content_handler(doc_text!(move |chunk| {
                if *s2.borrow() == 0 {
                    o5.borrow_mut().push_str(chunk.as_str());
                }
                Ok(())
            }))
            .with_strict(false);
        rewrite_str(html, settings).unwrap();
        tidy(&htmlize::unescape(out.borrow().as_str()))
    }

    /// Well-formed email markup: nested blocks, inline elements, links of every kind, images,
    /// skipped elements, comments and character references, in mixed case.
    fn document() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let text = prop_oneof![
            "[a-z]{1,8}",
            Just(" ".to_owned()),
            Just("\n  ".to_owned()),
            Just("&amp;".to_owned()),
            Just("&lt;b&gt;".to_owned()),
            Just("caf\u{e9}".to_owned()),
            Just("a < b".to_owned()),
            Just("<!-- <p>no</p> -->".to_owned()),
            Just("<br>".to_owned()),
            Just("<HR/>".to_owned()),
            Just(r#"<img src="x.png" alt="Logo &amp; Co">"#.to_owned()),
            Just("<img alt=' '>".to_owned()),
            Just("<style>p > a { color: red }</style>".to_owned()),
            Just("<SCRIPT>if (a<b) {}</SCRIPT>".to_owned()),
        ];
        text.prop_recursive(4, 48, 6, |inner| {
            let children = proptest::collection::vec(inner, 0..6).prop_map(|children| children.concat());
            let element = prop_oneof![
                Just("p"),
                Just("DIV"),
                Just("td"),
                Just("span"),
                Just("h2"),
                Just("li"),
                Just("b"),
                Just("template"),
                Just("head")
            ];
            let link = prop_oneof![
                Just(r#"<a href="https://shop.example/p?a=1&amp;b=2">"#),
                Just(r#"<A HREF='http://news.example/'>"#),
                Just(r#"<a title="1 > 0" href=https://x.example/>"#),
                Just(r#"<a href="mailto:help@example.com">"#),
                Just(r#"<a name="top">"#),
            ];
            prop_oneof![
                (element, children.clone())
                    .prop_map(|(name, content)| format!("<{name} class=\"c\">{content}</{name}>")),
                (link, children.clone()).prop_map(|(open, content)| format!("{open}{content}</a>")),
                Just("<a href=\"https://same.example/\">https://same.example/</a>".to_owned()),
                children,
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn the_text_is_what_an_html_rewriter_finds(body in document()) {
            let html = format!("<!DOCTYPE html><html><head><title>T</title></head><body>{body}</body></html>");
            proptest::prop_assert_eq!(from_html(&html), reference(&html), "{}", html);
        }
    }
}
