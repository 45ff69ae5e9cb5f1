//! Just enough of a BTF reader to find struct member offsets in the running
//! kernel's type information (`/sys/kernel/btf/vmlinux`).
//!
//! Our kernel programs are written in Rust, which emits no CO-RE
//! relocations, so the agent resolves the offsets it needs here and writes
//! them into the programs before they load.

use std::{collections::HashMap, path::Path};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("unknown BTF type kind {0}")]
    UnknownKind(u32),
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    #[error("member {member} of struct {strukt} not found in kernel BTF")]
    NoMember { strukt: String, member: String },
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    Composite {
        name: u32,
        members: Vec<Member>,
    },
    /// A type that only refers to another (typedef, const, volatile, …).
    Alias(u32),
    Other,
}

/// Parsed type section of one BTF blob.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is the `void` type.
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |off: usize| -> Result<u16, BtfError> {
            data.get(off..off + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(BtfError::Malformed("header truncated"))
        };
        if u16_at(0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF?)"));
        }
        let hdr = Reader::new(data, 4);
        let hdr_len = hdr.u32(0)? as usize;
        let type_off = hdr.u32(4)? as usize;
        let type_len = hdr.u32(8)? as usize;
        let str_off = hdr.u32(12)? as usize;
        let str_len = hdr.u32(16)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let type_data = section(type_off, type_len).ok_or(BtfError::Malformed("type section"))?;
        let strings = section(str_off, str_len)
            .ok_or(BtfError::Malformed("string section"))?
            .to_vec();

        let mut btf = Btf {
            strings,
            types: vec![Type::Other],
            structs: HashMap::new(),
        };
        let mut pos = 0usize;
        let r = Reader::new(type_data, 0);
        while pos < type_data.len() {
            let name = r.u32(pos)?;
            let info = r.u32(pos + 4)?;
            let size_or_type = r.u32(pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let raw = r.u32(m + 8)?;
                        members.push(Member {
                            name: r.u32(m)?,
                            type_id: r.u32(m + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    pos += vlen * 12;
                    Type::Composite { name, members }
                }
                // typedef, volatile, const, restrict, type tag
                8..=11 | 18 => Type::Alias(size_or_type),
                _ => {
                    pos += trailing_len(kind, vlen)?;
                    Type::Other
                }
            };
            if let Type::Composite { name, .. } = &ty {
                if *name != 0 && kind == KIND_STRUCT {
                    let id = btf.types.len() as u32;
                    let n = btf.string(*name).to_owned();
                    btf.structs.entry(n).or_insert(id);
                }
            }
            btf.types.push(ty);
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias(next) => id = *next,
                t => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// struct and union members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find_member(id, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    /// Like [`Self::member_offset`], `None` when the kernel lacks the member.
    pub fn optional_member_offset(&self, strukt: &str, member: &str) -> Option<u32> {
        self.member_offset(strukt, member).ok()
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Option<u32> {
        let Some(Type::Composite { members, .. }) = self.resolve(id) else {
            return None;
        };
        for m in members {
            if m.name != 0 && self.string(m.name) == member {
                return Some(base_bits + m.bit_offset);
            }
        }
        members
            .iter()
            .filter(|m| m.name == 0)
            .find_map(|m| self.find_member(m.type_id, member, base_bits + m.bit_offset))
    }
}

/// Bytes that follow the common 12-byte type record for `kind`.
fn trailing_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        1 => 4,               // int
        2 | 7 | 12 | 16 => 0, // ptr, fwd, func, float
        3 => 12,              // array
        6 => vlen * 8,        // enum
        13 => vlen * 8,       // func proto
        14 => 4,              // var
        15 => vlen * 12,      // datasec
        17 => 4,              // decl tag
        19 => vlen * 12,      // enum64
        k => return Err(BtfError::UnknownKind(k)),
    })
}

struct Reader<'a> {
    data: &'a [u8],
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], base: usize) -> Self {
        Reader { data, base }
    }

    fn u32(&self, off: usize) -> Result<u32, BtfError> {
        let start = self.base + off;
        self.data
            .get(start..start + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(BtfError::Malformed("record truncated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with `struct outer { int a; union { long b; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0long\0".to_vec();
        let mut types = Vec::new();
        let push = |t: &mut Vec<u8>, words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&mut types, &[1, 1 << 24, 4, 32]);
        // 2: long (8 bytes)
        push(&mut types, &[15, 1 << 24, 8, 64]);
        // 3: anonymous union { long b; }
        push(&mut types, &[0, (5 << 24) | 1, 8, 13, 2, 0]);
        // 4: struct outer { int a; <anon union> at 64 bits }
        push(&mut types, &[5, (4 << 24) | 2, 16, 11, 1, 0, 0, 3, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("outer", "c"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let data = sample();
        for len in [0, 3, 10, 30, data.len() - 1] {
            assert!(Btf::parse(&data[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn running_kernel_has_task_struct() {
        let btf = Btf::from_kernel().expect("fdr needs kernel BTF (CONFIG_DEBUG_INFO_BTF)");
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(tgid, pid + 4, "tgid follows pid in every kernel");
    }
}
