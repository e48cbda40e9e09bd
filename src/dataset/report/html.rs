//! The HTML report. Templates live in `templates/` and are compiled into the binary; every
//! value is HTML-escaped (file names and captions are user text).

use super::Report;
use minijinja::{AutoEscape, Environment};

pub const STYLE: (&str, &str) = ("_style.html.j2", include_str!("../../../templates/_style.html.j2"));
const PAGE: (&str, &str) = ("dataset_report.html.j2", include_str!("../../../templates/dataset_report.html.j2"));

/// An environment with the shared partials, escaping everything, and the `pct` filter.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_filter("pct", |x: f64| format!("{:.0}%", x * 100.0));
    env.add_template(STYLE.0, STYLE.1).expect("style partial parses");
    env
}

pub fn render(report: &Report) -> Result<String, minijinja::Error> {
    let mut env = environment();
    env.add_template(PAGE.0, PAGE.1)?;
    env.get_template(PAGE.0)?.render(minijinja::context! { r => report })
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
