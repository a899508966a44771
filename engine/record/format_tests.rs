//! Round trips of the record's byte format: what is encoded reads back equal, a patch of the
//! values is seen by a reader only once its checksum is written, and damaged bytes are refused.

use super::*;

fn entry(path: &str, n: u8, dir: Option<&str>) -> Entry {
    Entry {
        path: path.to_owned(),
        size: u64::from(n) * 10,
        mtime_ns: i64::from(n) * 1_000_000_007,
        ctime_ns: i64::from(n) * 1_000_000_013,
        ino: u64::from(n) + 1000,
        digest: [n; 32],
        recorded_at_ns: i64::from(n) * 2_000_000_011,
        dir: dir.map(str::to_owned),
    }
}

fn staged(path: &str, n: u8, tree: bool) -> Staged {
    Staged {
        path: path.to_owned(),
        tree,
        digest: [n; 32],
        size: u64::from(n) * 3,
        executable: !tree && n % 2 == 1,
    }
}

fn head() -> Head {
    Head {
        format: FORMAT,
        exe: Stamp {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 8,
            ino: 3,
        },
        request: "//...".into(),
        config: [7; 32],
        touched_at_ms: 1_700_000_000_123,
        analysis_taken_at_ns: 99,
        root_entries: vec!["BUILD".into(), "a".into()],
        analysis: vec![(
            "a/BUILD".into(),
            Stamp {
                size: 4,
                mtime_ns: 5,
                ctime_ns: 9,
                ino: 6,
            },
        )],
        links: vec![("a/lib64".into(), false), ("a/x.py".into(), true)],
        tools: ToolStamps::default(),
        sources: vec![entry("a/x.py", 1, None), entry("a/y.py", 2, None)],
        outputs: vec![
            entry("flow-out/a/out.txt", 3, None),
            entry("flow-out/a/.gen.flow-tree", 4, Some("flow-out/a/gen")),
        ],
        unchanged_carries: Some(vec!["//a:x".into()]),
    }
}

fn results() -> Vec<NodeResult> {
    vec![
        NodeResult {
            key: Some([9; 32]),
            staged: vec![staged("a/out.txt", 5, false), staged("a/gen", 6, true)],
            outputs: vec![0, 1],
        },
        NodeResult {
            key: None,
            staged: vec![],
            outputs: vec![],
        },
    ]
}

/// Decodes a whole record the way `Record::load` and `Record::open` do.
fn decode(bytes: &[u8]) -> Option<(Head, Vec<NodeResult>, Vec<u8>)> {
    let len = checked_values(bytes)?;
    let (mut head, rest): (Head, &[u8]) = postcard::take_from_bytes(&bytes[HEADER + len..]).ok()?;
    read_head_values(&bytes[HEADER..HEADER + len], &mut head)?;
    let (mut results, body): (Vec<NodeResult>, &[u8]) = postcard::take_from_bytes(rest).ok()?;
    read_values(&bytes[HEADER..HEADER + len], &head, &mut results)?;
    Some((head, results, body.to_vec()))
}

fn same_entry(a: &Entry, b: &Entry) -> bool {
    (
        a.path.as_str(),
        a.size,
        a.mtime_ns,
        a.ctime_ns,
        a.ino,
        a.digest,
        a.recorded_at_ns,
        &a.dir,
    ) == (
        b.path.as_str(),
        b.size,
        b.mtime_ns,
        b.ctime_ns,
        b.ino,
        b.digest,
        b.recorded_at_ns,
        &b.dir,
    )
}

fn same_staged(a: &Staged, b: &Staged) -> bool {
    (a.path.as_str(), a.tree, a.digest, a.size, a.executable)
        == (b.path.as_str(), b.tree, b.digest, b.size, b.executable)
}

#[test]
fn a_record_reads_back_as_written() {
    let (h, r) = (head(), results());
    let bytes = encode(&h, &r, b"the plan").expect("encodes");
    let (h2, r2, body) = decode(&bytes).expect("decodes");
    assert_eq!(body, b"the plan");
    assert_eq!(h2.touched_at_ms, h.touched_at_ms);
    assert_eq!(
        (h2.request.as_str(), h2.config),
        (h.request.as_str(), h.config)
    );
    assert_eq!((&h2.analysis, &h2.links), (&h.analysis, &h.links));
    assert!(h
        .sources
        .iter()
        .zip(&h2.sources)
        .all(|(a, b)| same_entry(a, b)));
    assert!(h
        .outputs
        .iter()
        .zip(&h2.outputs)
        .all(|(a, b)| same_entry(a, b)));
    assert_eq!(r2.len(), r.len());
    for (a, b) in r.iter().zip(&r2) {
        assert_eq!(a.key, b.key);
        assert_eq!(a.outputs, b.outputs);
        assert!(a
            .staged
            .iter()
            .zip(&b.staged)
            .all(|(x, y)| same_staged(x, y)));
    }
}

#[test]
fn staged_outputs_convert_both_ways() {
    for s in [staged("p/f", 3, false), staged("p/d", 4, true)] {
        let back = Staged::of(&s.to_output());
        assert!(same_staged(&s, &back));
    }
}

/// Regression (issue 15, item 6): the checksum covered the values only, and a flipped byte in
/// the plan (a command) was accepted. Every byte of a record, flipped alone, is refused.
#[test]
fn any_damaged_byte_is_refused() {
    let bytes = encode(&head(), &results(), b"echo the plan > out").expect("encodes");
    assert!(checked_values(&bytes).is_some());
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            assert!(
                checked_values(&bad).is_none(),
                "a flipped bit {bit} at byte {at} of {} was accepted",
                bytes.len()
            );
        }
    }
    assert!(checked_values(&bytes[..bytes.len() - 1]).is_none());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(checked_values(&longer).is_none());
    assert!(checked_values(&bytes[..HEADER - 1]).is_none());
    assert!(
        checked_values(b"flowrec\x05").is_none(),
        "an older format is refused"
    );
}

#[test]
fn a_patch_is_seen_only_with_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.rec");
    let (h, r) = (head(), results());
    let bytes = encode(&h, &r, b"").expect("encodes");
    std::fs::write(&path, &bytes).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
    };
    let mut patched_bytes = bytes.clone();
    let slots = Slots::of(&h);
    let patched = entry("a/x.py", 42, None);
    put_entry(&mut patched_bytes[HEADER + slots.source(0)..], &patched);
    assert!(patch_file(
        &path,
        id,
        &patched_bytes,
        vec![(slots.source(0), ENTRY_BYTES)]
    ));
    assert_eq!(
        std::fs::read(&path).unwrap()[SUMMED..],
        patched_bytes[SUMMED..]
    );
    let (h2, _, _) = decode(&std::fs::read(&path).unwrap()).expect("patched record decodes");
    assert!(same_entry(&h2.sources[0], &patched));
    assert!(same_entry(&h2.sources[1], &h.sources[1]));
    // A record replaced since it was read is not patched.
    std::fs::write(&path, &bytes).unwrap();
    let stale = FileId {
        ino: id.ino + 1,
        ..id
    };
    assert!(!patch_file(&path, stale, &patched_bytes, vec![(0, 8)]));
}
