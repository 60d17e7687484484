//! The template language of emails: a sandboxed minijinja environment and the helpers that keep
//! a message from showing broken or empty personalisation. The sandbox is minijinja without a
//! loader (so no file or network access, no `include` of anything), with fuel for loops, a
//! recursion limit and a cap on the output; the limits turn into `RenderError`s naming the part.

use std::io;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, Value, value::Kwargs};

use super::render::{RenderError, RenderFailure};

/// Instructions one part may run: a newsletter looping over a few hundred items uses a few
/// thousand, a runaway loop hits this in milliseconds.
pub const FUEL: u64 = 200_000;
/// The largest rendered part, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Nesting depth of blocks, loops and macro calls (a macro call counts about ten).
pub const RECURSION_LIMIT: usize = 100;

/// The templates of an email, each rendered on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Preheader,
    Html,
    Text,
}

impl Part {
    /// Also the template's name in the environment, and the input field it came from.
    pub fn name(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Preheader => "preheader",
            Part::Html => "html",
            Part::Text => "text",
        }
    }
}

/// A fresh sandboxed environment. Only the HTML part escapes values: the subject, preheader
/// and text part are not markup (the mail headers and the MIME encoder take care of them).
pub(super) fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_auto_escape_callback(|name| if name == "html" { AutoEscape::Html } else { AutoEscape::None });
    // Missing data prints as nothing and chains (`contact.attributes.nope.deeper`), so that a
    // gap in one profile never fails a whole send; `default` and `fallback` fill the gaps.
    environment.set_undefined_behavior(UndefinedBehavior::Chainable);
    // A null from an event or an empty field prints as nothing, not as "none".
    environment.set_formatter(
        |output, state, value| {
            if value.is_none() { Ok(()) } else { minijinja::escape_formatter(output, state, value) }
        },
    );
    environment.set_fuel(Some(FUEL));
    environment.set_recursion_limit(RECURSION_LIMIT);
    // `debug()` would print the whole context into a message.
    environment.remove_global("debug");
    environment.add_filter("default", default);
    environment.add_function("required", required);
    environment.add_function("fallback", fallback);
    environment
}

/// Undefined, none, a string of nothing but whitespace, or an empty list or map: what a
/// greeting must not be built from.
fn is_missing(value: &Value) -> bool {
    value.is_undefined()
        || value.is_none()
        || match value.as_str() {
            Some(text) => text.trim().is_empty(),
            None => value.len() == Some(0),
        }
}

/// `value | default("there")`: the fallback when the value is missing or blank (Jinja's own
/// `default` lets an empty string through, and an empty first name makes "Hello ,").
/// `default(x, true)` also replaces any false value, as in Jinja.
fn default(value: Value, fallback: Option<Value>, any_false: Option<bool>) -> Value {
    if is_missing(&value) || (any_false == Some(true) && !value.is_true()) {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value
    }
}

/// Why `required` refused; carried as the source of minijinja's error so that `fallback` can
/// tell it from every other failure without reading messages.
#[derive(Debug, thiserror::Error)]
#[error("{what} is missing")]
struct Missing {
    what: String,
}

/// `required(contact.first_name, "first name")`: the value, or a failure that the nearest
/// `fallback` block turns into its fallback (outside one, the render fails).
fn required(value: Value, what: Option<String>) -> Result<Value, Error> {
    if is_missing(&value) {
        let what = what.unwrap_or_else(|| "a required value".to_owned());
        return Err(Error::new(ErrorKind::InvalidOperation, format!("{what} is missing")).with_source(Missing { what }));
    }
    Ok(value)
}

/// `{% call fallback("Hello,") %}Hello {{ required(contact.first_name) }},{% endcall %}`: the
/// block, or the fallback when something in it is `required` and missing. The fallback may be a
/// macro, for fallbacks with markup.
fn fallback(state: &State, alternative: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let block: Value = kwargs.get("caller")?;
    kwargs.assert_all_used()?;
    match block.call(state, &[]) {
        Err(error) if missing_data(&error).is_some() => {
            if alternative.as_object().is_some() {
                alternative.call(state, &[])
            } else {
                Ok(alternative)
            }
        }
        rendered => rendered,
    }
}

/// The `Missing` that caused `error`, if one did.
fn missing_data(error: &Error) -> Option<&Missing> {
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(missing) = current.downcast_ref::<Missing>() {
            return Some(missing);
        }
        cause = current.source();
    }
    None
}

/// Collects a rendered part, refusing to grow past `MAX_OUTPUT_BYTES`: the refusal stops the
/// render where it is.
#[derive(Default)]
pub(super) struct CappedOutput(Vec<u8>);

impl io::Write for CappedOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_OUTPUT_BYTES {
            return Err(io::Error::other("output limit reached"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CappedOutput {
    /// minijinja writes whole `str`s, so the bytes are UTF-8.
    pub(super) fn into_string(self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// The `RenderError` that a minijinja error of `part` amounts to.
pub(super) fn classify(part: Part, source: &str, error: &Error) -> RenderError {
    let failure = if let Some(missing) = missing_data(error) {
        RenderFailure::MissingData { what: missing.what.clone(), line: error.line() }
    } else {
        let message =
            error.detail().map_or_else(|| error.kind().to_string(), |detail| format!("{}: {detail}", error.kind()));
        match error.kind() {
            ErrorKind::OutOfFuel => RenderFailure::TooMuchWork,
            // Only the capped output fails to write.
            ErrorKind::WriteFailure => RenderFailure::TooLarge,
            // Mistakes in the template itself, whatever the data.
            ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod
            | ErrorKind::UnknownBlock
            | ErrorKind::TemplateNotFound => {
                let (line, column) = location(source, error);
                RenderFailure::Syntax { message, line, column }
            }
            _ => RenderFailure::Template { message, line: error.line() },
        }
    };
    RenderError::new(part, failure)
}

/// 1-based line and column (in characters) of where minijinja points.
fn location(source: &str, error: &Error) -> (usize, usize) {
    match error.range() {
        Some(range) if range.start <= source.len() && source.is_char_boundary(range.start) => {
            let before = &source[..range.start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |index| index + 1);
            (line, before[line_start..].chars().count() + 1)
        }
        _ => (error.line().unwrap_or(1), 1),
    }
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    fn render(source: &str, data: Value) -> Result<String, RenderError> {
        let environment = environment();
        let template = environment
            .template_from_named_str("html", source)
            .map_err(|error| classify(Part::Html, source, &error))?;
        let mut output = CappedOutput::default();
        template.render_captured_to(data, &mut output).map_err(|error| classify(Part::Html, source, &error))?;
        Ok(output.into_string())
    }

    fn named(first_name: Option<&str>) -> Value {
        context! { contact => context! { first_name => first_name } }
    }

    #[test]
    fn default_replaces_missing_none_and_blank_values_but_keeps_real_ones() {
        let greeting = "Hi {{ contact.first_name | default(\"there\") }}!";
        assert_eq!(render(greeting, named(Some("Ada"))).unwrap(), "Hi Ada!");
        assert_eq!(render(greeting, named(Some("  "))).unwrap(), "Hi there!");
        assert_eq!(render(greeting, named(None)).unwrap(), "Hi there!");
        assert_eq!(render(greeting, context! {}).unwrap(), "Hi there!");
        assert_eq!(render("{{ 0 | default(5) }}{{ 0 | default(5, true) }}", context! {}).unwrap(), "05");
        assert_eq!(render("[{{ contact.first_name }}]", named(None)).unwrap(), "[]", "none prints as nothing");
    }

    #[test]
    fn a_fallback_block_shows_its_fallback_when_required_data_is_missing() {
        let block = "{% call fallback(\"Hello,\") %}Hello {{ required(contact.first_name) }},{% endcall %}";
        assert_eq!(render(block, named(Some("Ada"))).unwrap(), "Hello Ada,");
        assert_eq!(render(block, named(Some(""))).unwrap(), "Hello,");
        assert_eq!(render(block, named(None)).unwrap(), "Hello,");
    }

    #[test]
    fn a_fallback_may_be_a_macro_with_markup_and_fallbacks_nest() {
        let source = "{% macro generic() %}<p>Our <b>picks</b></p>{% endmacro %}\
            {% call fallback(generic) %}<p>{% call fallback(\"friend\") %}{{ required(contact.first_name) }}{% endcall %}: \
            {{ required(contact.tier, \"tier\") }}</p>{% endcall %}";
        assert_eq!(render(source, named(Some("Ada"))).unwrap(), "<p>Our <b>picks</b></p>");
        let with_tier = context! { contact => context! { tier => "gold" } };
        assert_eq!(render(source, with_tier).unwrap(), "<p>friend: gold</p>");
    }

    #[test]
    fn required_outside_a_fallback_fails_the_render_naming_what_is_missing() {
        let error = render("\n{{ required(contact.first_name, \"first name\") }}", named(None)).unwrap_err();
        assert_eq!(error.failure, RenderFailure::MissingData { what: "first name".into(), line: Some(2) });
    }

    #[test]
    fn other_errors_are_not_swallowed_by_a_fallback() {
        let source = "{% call fallback(\"x\") %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endcall %}";
        assert_eq!(render(source, context! {}).unwrap_err().failure, RenderFailure::TooMuchWork);
    }

    #[test]
    fn data_is_escaped_in_html_and_syntax_errors_give_line_and_column() {
        assert_eq!(render("{{ contact.first_name }}", named(Some("<script>"))).unwrap(), "&lt;script&gt;");
        let error = render("<p>\n  Hi {{ contact.first_name </p>", context! {}).unwrap_err();
        let RenderFailure::Syntax { line, column, .. } = error.failure else { panic!("{error:?}") };
        assert_eq!((line, column), (2, 29), "at the token that cannot follow");
    }

    #[test]
    fn unknown_filters_are_template_mistakes() {
        let error = render("{{ contact.first_name | shout }}", named(Some("Ada"))).unwrap_err();
        assert!(matches!(error.failure, RenderFailure::Syntax { line: 1, column: 25, .. }), "{error:?}");
    }

    #[test]
    fn output_past_the_cap_stops_the_render() {
        let source = "{% for i in range(100) %}{{ \"x\" * 20000 }}{% endfor %}";
        assert_eq!(render(source, context! {}).unwrap_err().failure, RenderFailure::TooLarge);
    }

    #[test]
    fn runaway_recursion_is_stopped() {
        let source = "{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}";
        assert!(matches!(render(source, context! {}).unwrap_err().failure, RenderFailure::Template { .. }));
    }

    #[test]
    fn nothing_outside_the_template_can_be_included() {
        let error = render("{% include \"/etc/passwd\" %}", context! {}).unwrap_err();
        assert!(matches!(error.failure, RenderFailure::Syntax { .. }), "{error:?}");
    }
}
