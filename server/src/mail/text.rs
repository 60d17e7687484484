//! The text part of an email without one: the rendered HTML's words, one paragraph or block per
//! line, links followed by their URL in brackets, headings and layout tables without drawn
//! borders. It runs for every recipient, so it is one streaming pass of lol_html rather than a
//! full HTML tree (html2text took two thirds of a send's CPU and drew layout tables as lines of
//! box characters), and a tracked message shares the pass that rewrites its links.

use std::{cell::RefCell, rc::Rc};

use lol_html::{RewriteStrSettings, doc_text, element, end_tag, rewrite_str};

/// Elements whose content is not text for people: styles, scripts, the head.
const SKIPPED: &str = "head, style, script, title, template";
/// Elements that start and end a line of their own.
const BLOCKS: &str =
    "p, div, h1, h2, h3, h4, h5, h6, tr, li, blockquote, table, ul, ol, section, article, header, footer, td, th";

pub fn from_html(html: &str) -> String {
    let collector = TextCollector::new(html.len());
    // The rewritten HTML is thrown away: only what the handlers collected matters. Rewriting
    // fails only on memory limits, which are not set; the collected text is used either way.
    let _ = rewrite_str(html, collector.attach(RewriteStrSettings::new()).with_strict(false));
    collector.into_text()
}

/// Collects the text part while lol_html rewrites the HTML, so that a pass rewriting it for
/// another reason (tracking) makes the text part too instead of parsing the HTML a second time.
/// Its handlers read links before any handler attached after them rewrites them.
pub struct TextCollector {
    out: Rc<RefCell<String>>,
    skipping: Rc<RefCell<usize>>,
}

impl TextCollector {
    pub fn new(html_len: usize) -> Self {
        Self { out: Rc::new(RefCell::new(String::with_capacity(html_len / 2))), skipping: Rc::new(RefCell::new(0)) }
    }

    pub fn attach<'h, 's>(&self, settings: RewriteStrSettings<'h, 's>) -> RewriteStrSettings<'h, 's> {
        let (out, skipping) = (&self.out, &self.skipping);
        settings
            .append_element_content_handler(element!(SKIPPED, {
                let skipping = Rc::clone(skipping);
                move |element| {
                    *skipping.borrow_mut() += 1;
                    if let Some(handlers) = element.end_tag_handlers() {
                        let skipping = Rc::clone(&skipping);
                        handlers.push(end_tag!(move |_| {
                            let mut depth = skipping.borrow_mut();
                            *depth = depth.saturating_sub(1);
                            Ok(())
                        }));
                    }
                    Ok(())
                }
            }))
            .append_element_content_handler(element!(BLOCKS, {
                let out = Rc::clone(out);
                move |element| {
                    out.borrow_mut().push('\n');
                    if let Some(handlers) = element.end_tag_handlers() {
                        let out = Rc::clone(&out);
                        handlers.push(end_tag!(move |_| {
                            out.borrow_mut().push('\n');
                            Ok(())
                        }));
                    }
                    Ok(())
                }
            }))
            .append_element_content_handler(element!("br, hr", {
                let out = Rc::clone(out);
                move |_| {
                    out.borrow_mut().push('\n');
                    Ok(())
                }
            }))
            .append_element_content_handler(element!("a[href]", {
                let out = Rc::clone(out);
                move |link| {
                    let href = link.get_attribute("href").map(|href| htmlize::unescape_attribute(href).into_owned());
                    let start = out.borrow().len();
                    if let (Some(href), Some(handlers)) = (href, link.end_tag_handlers())
                        && (href.starts_with("http://") || href.starts_with("https://"))
                    {
                        let out = Rc::clone(&out);
                        handlers.push(end_tag!(move |_| {
                            let mut out = out.borrow_mut();
                            // A link whose text is its URL needs it only once.
                            let shown = htmlize::unescape(&out[start..]).trim().to_owned();
                            if shown != href {
                                out.push_str(" (");
                                out.push_str(&htmlize::escape_text(href.as_str()));
                                out.push(')');
                            }
                            Ok(())
                        }));
                    }
                    Ok(())
                }
            }))
            .append_element_content_handler(element!("img[alt]", {
                let out = Rc::clone(out);
                move |image| {
                    if let Some(alt) = image.get_attribute("alt").filter(|alt| !alt.trim().is_empty()) {
                        out.borrow_mut().push_str(&htmlize::escape_text(htmlize::unescape_attribute(&alt)));
                    }
                    Ok(())
                }
            }))
            .append_document_content_handler(doc_text!({
                let out = Rc::clone(out);
                let skipping = Rc::clone(skipping);
                move |chunk| {
                    if *skipping.borrow() == 0 {
                        out.borrow_mut().push_str(chunk.as_str());
                    }
                    Ok(())
                }
            }))
    }

    /// The text part, once the rewrite is done.
    pub fn into_text(self) -> String {
        tidy(&htmlize::unescape(self.out.borrow().as_str()))
    }
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
}
