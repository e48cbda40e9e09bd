//! The dataset report's HTML page (templates/dataset_report.html.j2).

use super::Report;

const PAGE: (&str, &str) = ("dataset_report.html.j2", include_str!("../../../templates/dataset_report.html.j2"));

pub fn render(report: &Report) -> Result<String, minijinja::Error> {
    let mut env = crate::html::environment();
    env.add_template(PAGE.0, PAGE.1)?;
    env.get_template(PAGE.0)?.render(minijinja::context! { r => report, thumbs => report.thumbnails })
}
