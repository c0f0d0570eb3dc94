//! The first `<form>` of an HTML page: its action and hidden inputs, for tests that post
//! forms as a browser would (the provider's sign-out confirmation, the app's end-session
//! form).
#![allow(dead_code)]

/// The first `<form>` of a page: its action and its hidden inputs.
pub struct Form {
    /// The `action` attribute, as written.
    pub action: String,
    /// `(name, value)` of each hidden input, in order.
    pub hidden: Vec<(String, String)>,
}

impl Form {
    /// The first form of `html`, if any.
    pub fn parse(html: &str) -> Option<Form> {
        let start = html.find("<form")?;
        let tag_end = start + html[start..].find('>')?;
        let action = attribute(&html[start..tag_end], "action").unwrap_or_default();
        let end = html[tag_end..]
            .find("</form>")
            .map_or(html.len(), |i| tag_end + i);
        let mut hidden = Vec::new();
        let mut rest = &html[tag_end..end];
        while let Some(i) = rest.find("<input") {
            let tag = &rest[i..];
            let close = tag.find('>').unwrap_or(tag.len());
            let tag = &tag[..close];
            if attribute(tag, "type").is_some_and(|t| t.eq_ignore_ascii_case("hidden")) {
                if let Some(name) = attribute(tag, "name") {
                    hidden.push((name, attribute(tag, "value").unwrap_or_default()));
                }
            }
            rest = &rest[i + close..];
        }
        Some(Form { action, hidden })
    }
}

/// The value of an attribute in a start tag (`name="value"` or `name='value'`).
pub fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = tag[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at > 0 && tag.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        let quote = rest.chars().next()?;
        if quote == '"' || quote == '\'' {
            let value = &rest[1..];
            let end = value.find(quote)?;
            return Some(unescape(&value[..end]));
        }
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        return Some(unescape(&rest[..end]));
    }
    None
}

/// Undoes the HTML escapes pages use in attribute values and text.
pub fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
