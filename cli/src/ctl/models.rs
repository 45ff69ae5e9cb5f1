//! `fdrctl model`: list runtime models, show one as YAML or JSON (stable
//! order, one item per line, so that two models diff well), relearn.

use std::io::Write;

use fdr_proto::v1 as pb;
use serde_json::{json, Value};

use super::{escape::escape as e, quiet_pipe, time_text, Result};
use crate::client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelCmd {
    /// Every model: state, number of items, anomalies, end of learning.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Models asked for per call (0: as many as the agent sends).
        #[arg(long, default_value_t = 0, hide = true)]
        page_size: u32,
    },
    /// A model and everything it learned (sorted, one item per line).
    Show {
        /// A key, or a part of one that matches exactly one model.
        key: String,
        #[arg(long, value_parser = ["yaml", "json"], default_value = "yaml")]
        format: String,
        /// Items asked for per call (0: as many as the agent sends).
        #[arg(long, default_value_t = 0, hide = true)]
        page_size: u32,
    },
    /// Forget what a model learned and learn again; prints the keys of the
    /// models that restarted learning.
    Relearn {
        /// A key, or a part of one that matches exactly one model.
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        /// Every model.
        #[arg(long, conflicts_with = "key")]
        all: bool,
    },
}

pub async fn model(client: &mut Client, cmd: &ModelCmd, out: &mut impl Write) -> Result<()> {
    let text = match cmd {
        ModelCmd::List { json, page_size } => {
            // Page by page: the table's key column is as wide as the first
            // page's longest key.
            let mut req = pb::ListModelsRequest {
                limit: *page_size,
                ..Default::default()
            };
            let mut width = None;
            loop {
                let page = client.list_models(req.clone()).await?.into_inner();
                let text: String = if *json {
                    page.models
                        .iter()
                        .map(|m| super::escape::json(&summary_json(m)) + "\n")
                        .collect()
                } else {
                    let w = *width.get_or_insert_with(|| key_width(&page.models));
                    let mut t = if req.cursor.is_empty() {
                        table_header(w)
                    } else {
                        String::new()
                    };
                    for m in &page.models {
                        t += &table_row(m, w);
                    }
                    t
                };
                if !quiet_pipe(out.write_all(text.as_bytes()))? {
                    return Ok(());
                }
                if page.next_cursor.is_empty() {
                    return Ok(());
                }
                req.cursor = page.next_cursor;
            }
        }
        ModelCmd::Show {
            key,
            format,
            page_size,
        } => {
            // Page by page: the model's fields first, then its sections as
            // they come, each section's items in order.
            let mut req = pb::GetModelRequest {
                key: key.clone(),
                limit: *page_size,
                ..Default::default()
            };
            let mut m = client.get_model(req.clone()).await?.into_inner();
            // Later pages by the exact key (a part of one could match a
            // model added meanwhile).
            req.key = m.key.clone();
            let mut w = ModelWriter::new(format == "json");
            let mut text = w.header(&m);
            loop {
                for s in &m.sections {
                    text += &w.section(s);
                }
                if !quiet_pipe(out.write_all(text.as_bytes()))? {
                    return Ok(());
                }
                if m.next_cursor.is_empty() {
                    break;
                }
                req.cursor = std::mem::take(&mut m.next_cursor);
                m = client.get_model(req.clone()).await?.into_inner();
                text = String::new();
            }
            w.finish()
        }
        ModelCmd::Relearn { key, all } => {
            let req = pb::RelearnModelRequest {
                key: key.clone().unwrap_or_default(),
                all: *all,
            };
            let done = client.relearn_model(req).await?.into_inner();
            let more = done.count.saturating_sub(done.keys.len() as u64);
            if more > 0 {
                eprintln!("fdrctl: {more} more models restarted learning (not listed)");
            }
            done.keys.iter().map(|k| format!("{}\n", e(k))).collect()
        }
    };
    quiet_pipe(out.write_all(text.as_bytes()))?;
    Ok(())
}

fn state_name(raw: i32) -> &'static str {
    match pb::ModelState::try_from(raw) {
        Ok(pb::ModelState::Learning) => "learning",
        Ok(pb::ModelState::Active) => "active",
        _ => "unknown",
    }
}

/// The key column's widest: a longer key pushes the rest of its row.
const KEY_WIDTH: usize = 48;

/// The key column's width for these models: the longest key (up to
/// [`KEY_WIDTH`]).
fn key_width(models: &[pb::Model]) -> usize {
    let longest = models.iter().map(|m| e(&m.key).chars().count()).max();
    longest.unwrap_or(0).clamp(3, KEY_WIDTH)
}

fn table_header(w: usize) -> String {
    format!(
        "{:<w$} {:<8} {:>7} {:>9} LEARNING UNTIL\n",
        "KEY", "STATE", "ITEMS", "ANOMALIES"
    )
}

fn table_row(m: &pb::Model, w: usize) -> String {
    format!(
        "{:<w$} {:<8} {:>7} {:>9} {}\n",
        e(&m.key),
        state_name(m.state),
        m.item_count,
        m.anomalies,
        time_text(m.learning_until.as_ref())
    )
}

/// The models as a table, the key column as wide as the longest key (up to
/// [`KEY_WIDTH`]).
#[cfg(test)]
fn models_table(models: &[pb::Model]) -> String {
    let w = key_width(models);
    let mut t = table_header(w);
    for m in models {
        t += &table_row(m, w);
    }
    t
}

/// Writes a model shown page by page (`model_yaml` and `model_json_text`
/// of the whole model, the same text): the fields from the first page,
/// then each section's items as pages bring them (a section may go on in
/// the next page), then the end.
struct ModelWriter {
    json: bool,
    /// The JSON text after the sections.
    json_tail: String,
    /// The section being written, and how many of its items were.
    current: Option<(String, usize)>,
    sections: usize,
}

impl ModelWriter {
    fn new(json: bool) -> Self {
        ModelWriter {
            json,
            json_tail: String::new(),
            current: None,
            sections: 0,
        }
    }

    /// The model's fields, up to its sections.
    fn header(&mut self, m: &pb::Model) -> String {
        if self.json {
            let mut v = summary_json(m);
            v["sections"] = json!({});
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            const MARK: &str = "\"sections\": {}";
            let at = text.find(MARK).map_or(text.len(), |i| i + MARK.len() - 1);
            self.json_tail = super::escape::json_safe(text[at..].to_owned()) + "\n";
            return super::escape::json_safe(text[..at].to_owned());
        }
        format!(
            "key: {}\nstate: {}\nlearning_since: {}\nlearning_until: {}\nitem_count: {}\nanomalies: {}\n",
            yaml_scalar(&m.key),
            state_name(m.state),
            yaml_time(m.learning_since.as_ref()),
            yaml_time(m.learning_until.as_ref()),
            m.item_count,
            m.anomalies
        )
    }

    /// Closes the section being written.
    fn close(&mut self) -> String {
        match self.current.take() {
            None => String::new(),
            Some((_, n)) if self.json => if n > 0 { "\n    ]" } else { "]" }.to_owned(),
            Some((name, 0)) => format!("  {}: []\n", yaml_scalar(&name)),
            Some(_) => String::new(),
        }
    }

    /// A page's part of one section.
    fn section(&mut self, s: &pb::ModelSection) -> String {
        let mut t = String::new();
        if self
            .current
            .as_ref()
            .is_none_or(|(name, _)| *name != s.name)
        {
            t += &self.close();
            if self.json {
                if self.sections > 0 {
                    t.push(',');
                }
                t += &format!("\n    {}: [", quoted(&s.name));
            } else if self.sections == 0 {
                t += "sections:\n";
            }
            self.sections += 1;
            self.current = Some((s.name.clone(), 0));
        }
        let Some((name, n)) = self.current.as_mut() else {
            return t;
        };
        for item in &s.items {
            if self.json {
                if *n > 0 {
                    t.push(',');
                }
                t += &format!("\n      {}", quoted(&item.value));
            } else {
                if *n == 0 {
                    t += &format!("  {}:\n", yaml_scalar(name));
                }
                t += &format!("    - {}\n", quoted(&item.value));
            }
            *n += 1;
        }
        t
    }

    /// What follows the last section.
    fn finish(&mut self) -> String {
        let mut t = self.close();
        if self.json {
            if self.sections > 0 {
                t += "\n  ";
            }
            t += &self.json_tail;
        } else if self.sections == 0 {
            t += "sections: {}\n";
        }
        t
    }
}

/// The sections sorted by name, each with its item values sorted.
#[cfg(test)]
fn sorted_sections(m: &pb::Model) -> Vec<(&str, Vec<&str>)> {
    let mut sections: Vec<(&str, Vec<&str>)> = m
        .sections
        .iter()
        .map(|s| {
            let mut items: Vec<&str> = s.items.iter().map(|i| i.value.as_str()).collect();
            items.sort_unstable();
            (s.name.as_str(), items)
        })
        .collect();
    sections.sort_by(|a, b| a.0.cmp(b.0));
    sections
}

fn time_value(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.map_or(Value::Null, |t| time_text(Some(t)).into())
}

/// Every field but the sections (what `ListModels` returns).
fn summary_json(m: &pb::Model) -> Value {
    json!({
        "key": m.key,
        "state": state_name(m.state),
        "learning_since": time_value(m.learning_since.as_ref()),
        "learning_until": time_value(m.learning_until.as_ref()),
        "item_count": m.item_count,
        "anomalies": m.anomalies,
    })
}

/// The whole model as pretty JSON: the summary and `sections`, an object
/// of sorted arrays of item values.
#[cfg(test)]
fn model_json_text(m: &pb::Model) -> String {
    let mut v = summary_json(m);
    let sections: serde_json::Map<String, Value> = sorted_sections(m)
        .into_iter()
        .map(|(name, items)| (name.to_owned(), json!(items)))
        .collect();
    v["sections"] = Value::Object(sections);
    super::escape::json_safe(serde_json::to_string_pretty(&v).unwrap_or_default()) + "\n"
}

/// A JSON string: double-quoted, escaped, and valid YAML.
fn quoted(s: &str) -> String {
    super::escape::json(&Value::from(s))
}

/// `s` as a YAML scalar: plain when it cannot be read as anything but this
/// string (a letter or `/` first, then letters, digits and `._/:@+-`, no
/// `:` last, not a boolean or null word), quoted otherwise.
fn yaml_scalar(s: &str) -> String {
    const WORDS: [&str; 9] = ["true", "false", "yes", "no", "on", "off", "null", "y", "n"];
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:@+-".contains(c))
        && !s.ends_with(':')
        && !WORDS.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_owned()
    } else {
        quoted(s)
    }
}

fn yaml_time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map_or_else(|| "null".into(), |t| time_text(Some(t)))
}

/// The whole model as YAML: fields in a fixed order, sections and items
/// sorted, items always quoted, one per line.
#[cfg(test)]
fn model_yaml(m: &pb::Model) -> String {
    let mut y = format!(
        "key: {}\nstate: {}\nlearning_since: {}\nlearning_until: {}\nitem_count: {}\nanomalies: {}\n",
        yaml_scalar(&m.key),
        state_name(m.state),
        yaml_time(m.learning_since.as_ref()),
        yaml_time(m.learning_until.as_ref()),
        m.item_count,
        m.anomalies
    );
    let sections = sorted_sections(m);
    if sections.is_empty() {
        y += "sections: {}\n";
        return y;
    }
    y += "sections:\n";
    for (name, items) in sections {
        if items.is_empty() {
            y += &format!("  {}: []\n", yaml_scalar(name));
            continue;
        }
        y += &format!("  {}:\n", yaml_scalar(name));
        for item in items {
            y += &format!("    - {}\n", quoted(item));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn items(values: &[&str]) -> Vec<pb::ModelItem> {
        values
            .iter()
            .map(|v| pb::ModelItem {
                value: (*v).into(),
                learned_at: ts(1_700_000_100),
            })
            .collect()
    }

    /// Sections and items deliberately out of order.
    fn model() -> pb::Model {
        pb::Model {
            key: "image:sha256:0123abcd".into(),
            state: pb::ModelState::Active as i32,
            learning_since: ts(1_700_000_000),
            learning_until: ts(1_700_003_600),
            sections: vec![
                pb::ModelSection {
                    name: "listen".into(),
                    items: items(&["tcp/8080"]),
                },
                pb::ModelSection {
                    name: "exec".into(),
                    items: items(&["/usr/bin/curl", "/bin/sh -> \"x\"\ty"]),
                },
                pb::ModelSection {
                    name: "file".into(),
                    items: Vec::new(),
                },
            ],
            item_count: 3,
            anomalies: 2,
            next_cursor: String::new(),
        }
    }

    #[test]
    fn yaml_is_sorted_quoted_and_one_item_per_line() {
        assert_eq!(
            model_yaml(&model()),
            r#"key: image:sha256:0123abcd
state: active
learning_since: 2023-11-14T22:13:20.000Z
learning_until: 2023-11-14T23:13:20.000Z
item_count: 3
anomalies: 2
sections:
  exec:
    - "/bin/sh -> \"x\"\ty"
    - "/usr/bin/curl"
  file: []
  listen:
    - "tcp/8080"
"#
        );
    }

    #[test]
    fn yaml_quotes_what_could_read_as_something_else() {
        assert_eq!(yaml_scalar("service:sshd.service"), "service:sshd.service");
        assert_eq!(yaml_scalar("exe:/usr/bin/x"), "exe:/usr/bin/x");
        for s in [
            "", "yes", "Null", "123", "-x", "a: b", "a:", "#c", "@x", "é",
        ] {
            assert_eq!(yaml_scalar(s), quoted(s), "{s:?}");
        }
        let bare = pb::Model::default();
        assert!(model_yaml(&bare).ends_with("learning_since: null\nlearning_until: null\nitem_count: 0\nanomalies: 0\nsections: {}\n"));
    }

    #[test]
    fn json_has_the_same_fields() {
        let v: Value = serde_json::from_str(&model_json_text(&model())).unwrap();
        assert_eq!(v["state"], "active");
        assert_eq!(v["learning_until"], "2023-11-14T23:13:20.000Z");
        assert_eq!(v["sections"]["exec"][1], "/usr/bin/curl");
        assert_eq!(v["sections"]["file"], json!([]));
        assert_eq!(v["anomalies"], 2);
    }

    /// The whole model cut into pages of `n` items, as the agent sends it:
    /// sections by name, items by value, a section going on in the next
    /// page, every section in the pages.
    fn pages(m: &pb::Model, n: usize) -> Vec<pb::Model> {
        let head = pb::Model {
            sections: Vec::new(),
            ..m.clone()
        };
        let mut pages = vec![head.clone()];
        let mut count = 0;
        for (name, items) in sorted_sections(m) {
            let section = |items: Vec<pb::ModelItem>| pb::ModelSection {
                name: name.to_owned(),
                items,
            };
            pages.last_mut().unwrap().sections.push(section(Vec::new()));
            for v in items {
                if count == n {
                    pages.push(head.clone());
                    pages.last_mut().unwrap().sections.push(section(Vec::new()));
                    count = 0;
                }
                let last = pages.last_mut().unwrap().sections.last_mut().unwrap();
                last.items.push(pb::ModelItem {
                    value: v.to_owned(),
                    learned_at: None,
                });
                count += 1;
            }
        }
        pages
    }

    fn written(pages: &[pb::Model], json: bool) -> String {
        let mut w = ModelWriter::new(json);
        let mut t = w.header(&pages[0]);
        for p in pages {
            for s in &p.sections {
                t += &w.section(s);
            }
        }
        t + &w.finish()
    }

    #[test]
    fn paged_show_writes_the_same_text() {
        let mut big = model();
        big.sections[0].items = items(&["a", "b", "c", "d", "e\u{202e}"]);
        for m in [model(), big, pb::Model::default()] {
            for n in [1, 2, 3, 100] {
                let p = pages(&m, n);
                assert_eq!(written(&p, false), model_yaml(&m), "{n}");
                assert_eq!(written(&p, true), model_json_text(&m), "{n}");
            }
        }
    }

    #[test]
    fn table_aligns_on_the_longest_key() {
        let learning = pb::Model {
            key: "service:cron.service".into(),
            state: pb::ModelState::Learning as i32,
            ..model()
        };
        assert_eq!(
            models_table(&[model(), learning]),
            "KEY                   STATE      ITEMS ANOMALIES LEARNING UNTIL\n\
             image:sha256:0123abcd active         3         2 2023-11-14T23:13:20.000Z\n\
             service:cron.service  learning       3         2 2023-11-14T23:13:20.000Z\n"
        );
        let long = pb::Model {
            key: format!("exe:/{}", "x".repeat(60)),
            ..model()
        };
        let t = models_table(&[long]);
        assert!(
            t.starts_with(&format!("KEY{} STATE", " ".repeat(45))),
            "{t}"
        );
        assert!(t.contains("xxx active "), "{t}");
    }
}
