//! HTML reports (`dataset report`, `compare`): templates live in `templates/` and are compiled
//! into the binary; every value is HTML-escaped, because file names, captions and prompts are
//! user text.

use minijinja::{AutoEscape, Environment};

const STYLE: (&str, &str) = ("_style.html.j2", include_str!("../templates/_style.html.j2"));

/// An environment with the shared partials, escaping everything, and the `pct` filter.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_filter("pct", |x: f64| pct(x));
    env.add_template(STYLE.0, STYLE.1).expect("style partial parses");
    env
}

/// A share (0..1) as a whole percentage, with one decimal below 1% so a small share does not
/// read as zero: the one rounding rule of every report and message.
pub fn pct(x: impl Into<f64>) -> String {
    let x = x.into();
    if x > 0.0 && x < 0.01 {
        format!("{:.1}%", x * 100.0)
    } else {
        format!("{:.0}%", x * 100.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_text_is_escaped() {
        let env = super::environment();
        let out = env.render_str("{{ x }}", minijinja::context! { x => "<script>alert('x')</script>.jpg" }).unwrap();
        assert_eq!(out, "&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt;.jpg");
    }
}
