//! A structural check of `data.mdb`, read with plain file reads before LMDB
//! maps it.
//!
//! LMDB trusts the pages it maps: a damaged page or node header can send it
//! past the end of a page or through a NULL pointer (a flipped `F_DUPDATA`
//! bit makes `mdb_cursor_next` dereference a sub-cursor that a database
//! without duplicates does not have). So before opening, walk every page
//! LMDB can reach from the newest meta page and check what LMDB relies on:
//!
//! ```text
//!  meta 0 / meta 1 ── newest txnid ──▶ free DB tree ──▶ leaf: txnid → page list
//!                                  └─▶ main DB tree ──▶ leaf: "log"/"stable" → MDB_db
//!                                                              └─▶ their trees
//!  every page: number matches its place, type matches its depth, bounds and
//!  node offsets inside the page, children and overflow pages inside the
//!  file, each page reached once, leaf entries add up to the DB's count
//! ```
//!
//! The layout is liblmdb's (mdb.master, as vendored by `lmdb-master-sys`) on
//! 64-bit little-endian machines; elsewhere the check is skipped. A file
//! whose magic or version this check does not know is left to LMDB to
//! refuse. The cost is one read of every reachable page at open.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use raftkit::{StorageError, StorageResult};

const MAGIC: u32 = 0xBEEF_C0DE;
const DATA_VERSION: u32 = 1;
const PAGE_HEADER: usize = 16;
const NODE_HEADER: usize = 8;
const META_PAGES: u64 = 2;
const INVALID_PAGE: u64 = u64::MAX;
const DB_RECORD: usize = 48;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
/// The page-type bits (the others are in-memory state).
const P_TYPE: u16 = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40;

/// MDB_DUPSORT, MDB_DUPFIXED, MDB_INTEGERDUP, MDB_REVERSEDUP.
const DUP_FLAGS: u16 = 0x04 | 0x10 | 0x20 | 0x40;

const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

/// An `MDB_db` record: a tree's root, depth and entry count.
#[derive(Clone, Copy, Debug)]
struct Tree {
    flags: u16,
    depth: u16,
    entries: u64,
    root: u64,
}

impl Tree {
    fn parse(b: &[u8]) -> Tree {
        Tree {
            flags: u16_at(b, 4),
            depth: u16_at(b, 6),
            entries: u64_at(b, 32),
            root: u64_at(b, 40),
        }
    }
}

/// Which tree a page belongs to: what its leaves may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The free-page DB: page lists keyed by txnid.
    Free,
    /// The main DB: one record per named database.
    Main,
    /// A named database (`log` or `stable`): plain key/value pairs.
    Named,
}

/// A node's header fields, and where its key ends.
struct Node {
    off: usize,
    lo: u64,
    hi: u64,
    flags: u16,
    key_end: usize,
}

struct Walker<'a> {
    file: &'a File,
    name: String,
    page_size: usize,
    last_page: u64,
    seen: HashSet<u64>,
    named: Vec<(String, Tree)>,
}

/// Checks the file at `path`, if it exists.
pub(crate) fn check(path: &Path) -> StorageResult<()> {
    if !cfg!(all(target_pointer_width = "64", target_endian = "little")) {
        return Ok(());
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("opening", path.display(), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("reading metadata of", path.display(), e))?
        .len();
    if len == 0 {
        // Created but never written: LMDB initialises it.
        return Ok(());
    }
    let name = path.display().to_string();
    let mut head = [0u8; PAGE_HEADER + 136];
    if len < head.len() as u64 {
        return Err(corrupt(
            &name,
            format!("{len} bytes, too short for LMDB's meta page"),
        ));
    }
    read_at(&file, &name, &mut head, 0)?;
    if u32_at(&head, PAGE_HEADER) != MAGIC || u32_at(&head, PAGE_HEADER + 4) != DATA_VERSION {
        // Not the format this check knows: LMDB will say what it is.
        return Ok(());
    }
    let page_size = u32_at(&head, PAGE_HEADER + 24) as usize;
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(corrupt(
            &name,
            format!("meta page 0: page size {page_size}"),
        ));
    }
    let mut walker = Walker {
        file: &file,
        name,
        page_size,
        last_page: 0,
        seen: HashSet::new(),
        named: Vec::new(),
    };
    walker.check_file(len)
}

impl Walker<'_> {
    fn check_file(&mut self, len: u64) -> StorageResult<()> {
        let (free, main, last_page) = self.newest_meta(len)?;
        // The file may end before the last page (pages allocated, then freed
        // unwritten); pages a tree reaches must be in it, which `read_page`
        // checks.
        if last_page < META_PAGES - 1 {
            return Err(self.bad(format!("the last page is {last_page}")));
        }
        self.last_page = last_page;
        self.check_tree(free, Kind::Free, "the free-page DB")?;
        self.check_tree(main, Kind::Main, "the main DB")?;
        for (name, tree) in std::mem::take(&mut self.named) {
            self.check_tree(tree, Kind::Named, &format!("database {name:?}"))?;
        }
        Ok(())
    }

    /// The free and main trees and the last page of the newest meta page,
    /// chosen as LMDB does (both must be valid, the higher txnid wins).
    fn newest_meta(&self, len: u64) -> StorageResult<(Tree, Tree, u64)> {
        if len < META_PAGES * self.page_size as u64 {
            return Err(self.bad(format!("{len} bytes, shorter than the two meta pages")));
        }
        let mut newest = None;
        for n in 0..META_PAGES {
            let page = self.read_page(n)?;
            let meta = &page[PAGE_HEADER..];
            if u16_at(&page, 10) & P_TYPE != P_META
                || u32_at(meta, 0) != MAGIC
                || u32_at(meta, 4) != DATA_VERSION
            {
                return Err(self.bad(format!("meta page {n} is damaged")));
            }
            let txnid = u64_at(meta, 128);
            let found = (
                Tree::parse(&meta[24..72]),
                Tree::parse(&meta[72..120]),
                u64_at(meta, 120),
            );
            if newest.as_ref().is_none_or(|(t, _)| txnid > *t) {
                newest = Some((txnid, found));
            }
        }
        match newest {
            Some((_, found)) => Ok(found),
            None => Err(self.bad("no meta page".into())),
        }
    }

    fn check_tree(&mut self, tree: Tree, kind: Kind, what: &str) -> StorageResult<()> {
        if tree.root == INVALID_PAGE {
            if tree.depth != 0 || tree.entries != 0 {
                return Err(self.bad(format!(
                    "{what} is empty but records depth {} and {} entries",
                    tree.depth, tree.entries
                )));
            }
            return Ok(());
        }
        if kind == Kind::Named && tree.flags & DUP_FLAGS != 0 {
            // The store creates plain databases only; duplicates would
            // change the leaf format this check reads.
            return Err(self.bad(format!("{what} has flags {:#x}", tree.flags)));
        }
        if tree.depth == 0 || tree.depth > 64 {
            return Err(self.bad(format!("{what} records depth {}", tree.depth)));
        }
        let entries = self.check_page(tree.root, tree.depth, kind, what)?;
        if entries != tree.entries {
            return Err(self.bad(format!(
                "{what} holds {entries} entries but records {}",
                tree.entries
            )));
        }
        Ok(())
    }

    /// Checks the page `pgno` and everything under it, `depth` levels from
    /// the leaves (1 = a leaf); returns the entries under it.
    fn check_page(&mut self, pgno: u64, depth: u16, kind: Kind, what: &str) -> StorageResult<u64> {
        self.claim(pgno, 1, what)?;
        let page = self.read_page(pgno)?;
        let want = if depth == 1 { P_LEAF } else { P_BRANCH };
        let flags = u16_at(&page, 10);
        if u64_at(&page, 0) != pgno || flags & P_TYPE != want {
            return Err(self.bad(format!(
                "{what}: page {pgno} has number {} and flags {flags:#x}; expected a {} page",
                u64_at(&page, 0),
                if depth == 1 { "leaf" } else { "branch" }
            )));
        }
        let (lower, upper) = (u16_at(&page, 12) as usize, u16_at(&page, 14) as usize);
        if lower < PAGE_HEADER || lower > upper || upper > self.page_size || lower % 2 != 0 {
            return Err(self.bad(format!(
                "{what}: page {pgno} has free space {lower}..{upper}"
            )));
        }
        let mut entries = 0;
        for i in 0..(lower - PAGE_HEADER) / 2 {
            let node = self
                .node(&page, i, upper)
                .map_err(|e| self.bad(format!("{what}: page {pgno} node {i} {e}")))?;
            if depth > 1 {
                let child = node.lo | node.hi << 16 | (node.flags as u64) << 32;
                entries += self.check_page(child, depth - 1, kind, what)?;
            } else {
                self.check_leaf(&page, &node, kind, &format!("{what}: page {pgno} node {i}"))?;
                entries += 1;
            }
        }
        Ok(entries)
    }

    /// The header of node `i` of `page`, checked to lie inside the page.
    fn node(&self, page: &[u8], i: usize, upper: usize) -> Result<Node, String> {
        let off = u16_at(page, PAGE_HEADER + 2 * i) as usize;
        if off < upper || off + NODE_HEADER > self.page_size {
            return Err(format!(
                "at offset {off}, outside {upper}..{}",
                self.page_size
            ));
        }
        let ksize = u16_at(page, off + 6) as usize;
        let node = Node {
            off,
            lo: u16_at(page, off) as u64,
            hi: u16_at(page, off + 2) as u64,
            flags: u16_at(page, off + 4),
            key_end: off + NODE_HEADER + ksize,
        };
        if node.key_end > self.page_size {
            return Err(format!("has a {ksize}-byte key past the page"));
        }
        Ok(node)
    }

    /// Checks a leaf node's flags and data, and reads what LMDB itself reads
    /// from it: database records in the main DB, page lists in the free DB.
    fn check_leaf(
        &mut self,
        page: &[u8],
        node: &Node,
        kind: Kind,
        what: &str,
    ) -> StorageResult<()> {
        let (flags, key_end) = (node.flags, node.key_end);
        let size = (node.lo | node.hi << 16) as usize;
        if flags & F_DUPDATA != 0 || (flags & F_SUBDATA != 0) != (kind == Kind::Main) {
            return Err(self.bad(format!("{what} has flags {flags:#x}")));
        }
        let data = if flags & F_BIGDATA != 0 {
            if key_end + 8 > self.page_size || kind == Kind::Main {
                return Err(self.bad(format!("{what} has a misplaced overflow reference")));
            }
            self.check_overflow(u64_at(page, key_end), size, kind, what)?
        } else if key_end + size > self.page_size {
            return Err(self.bad(format!("{what} has {size} bytes of data past the page")));
        } else if kind == Kind::Named {
            // The store checks its own values (CRC32C) when it reads them.
            Vec::new()
        } else {
            page[key_end..key_end + size].to_vec()
        };
        match kind {
            Kind::Main => {
                if data.len() != DB_RECORD {
                    return Err(self.bad(format!("{what} is a database record of the wrong size")));
                }
                let name = String::from_utf8_lossy(&page[node.off + NODE_HEADER..key_end]);
                self.named.push((name.into_owned(), Tree::parse(&data)));
            }
            Kind::Free => self.check_page_list(&data, &format!("{what} (a free-page list)"))?,
            Kind::Named => {}
        }
        Ok(())
    }

    /// Checks the overflow pages at `pgno` holding `size` bytes; returns the
    /// data when the tree's leaves are read by LMDB itself (free lists).
    fn check_overflow(
        &mut self,
        pgno: u64,
        size: usize,
        kind: Kind,
        what: &str,
    ) -> StorageResult<Vec<u8>> {
        let page = self.read_page(pgno)?;
        let pages = u32_at(&page, 12) as u64;
        if u64_at(&page, 0) != pgno || u16_at(&page, 10) & P_TYPE != P_OVERFLOW || pages == 0 {
            return Err(self.bad(format!("{what}: overflow page {pgno} is damaged")));
        }
        if (pages as usize).saturating_mul(self.page_size) < PAGE_HEADER + size {
            return Err(self.bad(format!(
                "{what}: {size} bytes do not fit the {pages} overflow pages at {pgno}"
            )));
        }
        self.claim(pgno, pages, what)?;
        if kind != Kind::Free {
            return Ok(Vec::new());
        }
        let mut data = vec![0u8; size];
        let offset = pgno * self.page_size as u64 + PAGE_HEADER as u64;
        read_at(self.file, &self.name, &mut data, offset)?;
        Ok(data)
    }

    /// A free-page list: a count, then that many page numbers in the file.
    fn check_page_list(&self, data: &[u8], what: &str) -> StorageResult<()> {
        let count = if data.len() >= 8 {
            u64_at(data, 0)
        } else {
            u64::MAX
        };
        // LMDB may reserve a record larger than the list it then writes.
        if !data.len().is_multiple_of(8) || count > (data.len() / 8) as u64 - 1 {
            return Err(self.bad(format!(
                "{what}: {} bytes for a list of {count}",
                data.len()
            )));
        }
        for k in 1..=count as usize {
            let p = u64_at(data, 8 * k);
            if p < META_PAGES || p > self.last_page {
                return Err(self.bad(format!("{what}: page {p} is outside the file")));
            }
        }
        Ok(())
    }

    /// Marks `count` pages from `pgno` as reached, refusing pages outside the
    /// file and pages reached twice (a cycle, or two owners).
    fn claim(&mut self, pgno: u64, count: u64, what: &str) -> StorageResult<()> {
        let end = pgno.checked_add(count - 1);
        if pgno < META_PAGES || end.is_none_or(|e| e > self.last_page) {
            return Err(self.bad(format!(
                "{what}: page {pgno} (+{count}) is outside pages 2..={}",
                self.last_page
            )));
        }
        for p in pgno..pgno + count {
            if !self.seen.insert(p) {
                return Err(self.bad(format!("{what}: page {p} is reached twice")));
            }
        }
        Ok(())
    }

    fn read_page(&self, pgno: u64) -> StorageResult<Vec<u8>> {
        let mut page = vec![0u8; self.page_size];
        let offset = pgno
            .checked_mul(self.page_size as u64)
            .ok_or_else(|| self.bad(format!("page {pgno} is past any file")))?;
        read_at(self.file, &self.name, &mut page, offset)?;
        Ok(page)
    }

    fn bad(&self, what: String) -> StorageError {
        corrupt(&self.name, what)
    }
}

fn corrupt(name: &str, what: String) -> StorageError {
    StorageError::Corrupt(format!("{name}: LMDB structure check: {what}"))
}

fn read_at(file: &File, name: &str, buf: &mut [u8], offset: u64) -> StorageResult<()> {
    match std::os::unix::fs::FileExt::read_exact_at(file, buf, offset) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(corrupt(
            name,
            format!(
                "a read of {} bytes at offset {offset} runs past the end",
                buf.len()
            ),
        )),
        Err(e) => Err(StorageError::io("reading", name, e)),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
