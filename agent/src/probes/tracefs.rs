//! tracefs: found or mounted, and tracepoint record formats read from it.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

const MOUNT_POINT: &str = "/sys/kernel/tracing";
const LEGACY: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {MOUNT_POINT} failed: {0} \
         (run as root, or mount it: mount -t tracefs nodev {MOUNT_POINT})"
    )]
    Mount(std::io::Error),
    #[error("reading tracepoint format {path}: {source}")]
    Format {
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoField { tracepoint: String, field: String },
}

/// The tracefs root, mounting it at `/sys/kernel/tracing` when no tracefs is
/// mounted yet (aya looks for it there too).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for dir in [MOUNT_POINT, LEGACY] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = CString::new(MOUNT_POINT).expect("no NUL in a constant");
    let fstype = CString::new("tracefs").expect("no NUL in a constant");
    let source = CString::new("nodev").expect("no NUL in a constant");
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    tracing::info!(path = MOUNT_POINT, "mounted tracefs");
    Ok(PathBuf::from(MOUNT_POINT))
}

/// Field offsets of one tracepoint's record, from its `format` file.
#[derive(Debug, Clone)]
pub struct Format {
    name: String,
    fields: Vec<(String, u32)>,
}

impl Format {
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&format!("{category}:{name}"), &text))
    }

    /// Parses lines such as
    /// `field:__data_loc char[] filename; offset:8; size:4; signed:0;`
    /// (tab-separated).
    pub fn parse(name: &str, text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let mut decl = None;
                let mut offset = None;
                for part in line.split(';') {
                    let part = part.trim();
                    if let Some(d) = part.strip_prefix("field:") {
                        decl = d.rsplit(|c: char| c.is_whitespace() || c == '*').next();
                    } else if let Some(o) = part.strip_prefix("offset:") {
                        offset = o.trim().parse::<u32>().ok();
                    }
                }
                let field = decl?.split('[').next()?.to_owned();
                Some((field, offset?))
            })
            .collect();
        Format {
            name: name.to_owned(),
            fields,
        }
    }

    /// Offset of the field declared right after `field`.
    pub fn offset_after(&self, field: &str) -> Option<u32> {
        let at = self.fields.iter().position(|(f, _)| f == field)?;
        self.fields.get(at + 1).map(|(_, o)| *o)
    }

    /// How many fields are declared after `field`.
    pub fn args_after(&self, field: &str) -> usize {
        self.fields
            .iter()
            .position(|(f, _)| f == field)
            .map_or(0, |at| self.fields.len() - at - 1)
    }

    pub fn offset(&self, field: &str) -> Result<u32, TracefsError> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, o)| *o)
            .ok_or_else(|| TracefsError::NoField {
                tracepoint: self.name.clone(),
                field: field.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec
ID: 318
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;
\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:32;\tsize:16;\tsigned:0;

print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid
";

    #[test]
    fn parses_field_offsets() {
        let f = Format::parse("sched:sched_process_exec", EXEC);
        assert_eq!(f.offset("filename").unwrap(), 8);
        assert_eq!(f.offset("pid").unwrap(), 12);
        assert_eq!(f.offset("old_pid").unwrap(), 16);
        assert_eq!(f.offset("buf").unwrap(), 24);
        assert_eq!(f.offset("comm").unwrap(), 32);
        assert_eq!(f.offset("common_pid").unwrap(), 4);
        assert_eq!(f.offset_after("old_pid"), Some(24));
        assert_eq!(f.offset_after("comm"), None);
        assert_eq!(f.args_after("old_pid"), 2);
        assert_eq!(f.args_after("comm"), 0);
        let err = f.offset("nope").unwrap_err().to_string();
        assert!(
            err.contains("sched:sched_process_exec") && err.contains("nope"),
            "{err}"
        );
    }
}
