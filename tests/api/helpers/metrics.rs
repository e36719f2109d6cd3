//! Reading the `/metrics` page: one series' value by name and labels.

/// Reads one sample from Prometheus text, e.g. `metric(text, "x_total", &[("db","a")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = series.split_once('{').unwrap_or((series, "}"));
            if metric_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().unwrap())
        })
}
