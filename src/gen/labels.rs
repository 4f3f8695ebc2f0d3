//! Delayed labels: the generated CSV split into records with a `tx_id` and
//! the labels that arrive later (`millrace gen --labels-out`).

/// What [`split_labels`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSplit {
    /// Label lines written.
    pub labels: u64,
    /// Labels left out (`missing`): their predictions can only expire.
    pub dropped: u64,
    /// Ids of the labels left out.
    pub dropped_ids: Vec<String>,
}

/// Turns a generated CSV stream with inline labels into the delayed-label
/// layout: the records get a `tx_id` column (a hash of the original line, so
/// exact duplicates keep sharing it) and lose their label; the labels go to
/// their own CSV, `tx_id,label` in record order, with — for `delay` > 0 —
/// `labelled_at`, the event time of the record `delay` rows later (never
/// before the record's own), so the label becomes known `delay` records
/// late; for the last `delay` records that is after the stream's end (the
/// mean gap between rows, past the last one), so they stay unlearned. A line with the wrong number of fields keeps its shape (it is
/// rejected as before) and has no label line. A fraction `missing` of the
/// labels, chosen by the hash of the id, is left out.
pub fn split_labels(csv: &[u8], delay: u64, missing: f64) -> (Vec<u8>, Vec<u8>, LabelSplit) {
    let text = String::from_utf8_lossy(csv);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let label_col = header.iter().position(|h| *h == "label");
    let time_col = header.iter().position(|h| *h == "event_time");
    let rows: Vec<&str> = lines.collect();
    // The event time at or before each row (rows whose time does not parse take the previous one).
    let mut times = Vec::with_capacity(rows.len());
    let mut last = i64::MIN;
    for row in &rows {
        if let Some(t) = time_col.and_then(|c| row.split(',').nth(c)?.parse::<i64>().ok()) {
            last = t;
        }
        times.push(last);
    }
    let mut records = Vec::with_capacity(csv.len() + rows.len() * 20);
    let mut labels = Vec::new();
    let keep: Vec<&str> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != label_col)
        .map(|(_, h)| *h)
        .collect();
    records.extend_from_slice(format!("tx_id,{}\n", keep.join(",")).as_bytes());
    labels.extend_from_slice(if delay > 0 {
        b"tx_id,label,labelled_at\n".as_slice()
    } else {
        b"tx_id,label\n".as_slice()
    });
    let mut out = LabelSplit::default();
    let mut seen = std::collections::HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let h = xxhash_rust::xxh3::xxh3_64(row.as_bytes());
        let id = format!("tx-{h:016x}");
        let fields: Vec<&str> = row.split(',').collect();
        let Some(lc) = label_col.filter(|_| fields.len() == header.len()) else {
            records.extend_from_slice(format!("{id},{row}\n").as_bytes());
            continue;
        };
        let rest: Vec<&str> = fields
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != lc)
            .map(|(_, f)| *f)
            .collect();
        records.extend_from_slice(format!("{id},{}\n", rest.join(",")).as_bytes());
        if !seen.insert(h) {
            continue; // An exact duplicate: one label per id.
        }
        if (h % 1_000_000) as f64 / 1e6 < missing {
            out.dropped += 1;
            out.dropped_ids.push(id);
            continue;
        }
        let label = fields[lc];
        if delay > 0 {
            let own = time_col
                .and_then(|c| fields[c].parse::<i64>().ok())
                .unwrap_or(i64::MIN);
            let j = i + delay as usize;
            let later = match times.get(j) {
                Some(t) => *t,
                None => {
                    let (first, end) = (times[0], times[rows.len() - 1]);
                    let gap = ((end - first) / rows.len().max(1) as i64).max(1);
                    end + gap * (j + 1 - rows.len()) as i64
                }
            };
            let known = own.max(later);
            let known = if known == i64::MIN {
                String::new()
            } else {
                known.to_string()
            };
            labels.extend_from_slice(format!("{id},{label},{known}\n").as_bytes());
        } else {
            labels.extend_from_slice(format!("{id},{label}\n").as_bytes());
        }
        out.labels += 1;
    }
    (records, labels, out)
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn labels_move_to_their_own_file_and_duplicates_share_an_id() {
        let csv = b"event_time,account,amount,label\n1000,a,1.0,1\n2000,b,2.0,0\n2000,b,2.0,0\n3000,c,oops\n4000,d,4.0,1\n";
        let (records, labels, split) = split_labels(csv, 2, 0.0);
        let records = String::from_utf8(records).unwrap();
        let labels = String::from_utf8(labels).unwrap();
        let r: Vec<&str> = records.lines().collect();
        assert_eq!(r[0], "tx_id,event_time,account,amount");
        assert!(r[1].ends_with(",1000,a,1.0"));
        assert_eq!(r[2], r[3], "an exact duplicate stays one");
        assert!(
            r[4].ends_with(",3000,c,oops"),
            "a short line keeps its shape"
        );
        let l: Vec<&str> = labels.lines().collect();
        assert_eq!(l[0], "tx_id,label,labelled_at");
        // Known two rows later: row 0 at row 2's time, row 1 at row 3's; row 4
        // two mean gaps (600 ms) after the end.
        assert!(l[1].ends_with(",1,2000"), "{}", l[1]);
        assert!(l[2].ends_with(",0,3000"), "{}", l[2]);
        assert!(l[3].ends_with(",1,5200"), "{}", l[3]);
        assert_eq!((split.labels, split.dropped), (3, 0));
        let (_, all_gone, split) = split_labels(csv, 0, 1.0);
        assert_eq!(String::from_utf8(all_gone).unwrap(), "tx_id,label\n");
        assert_eq!(split.dropped, 3);
    }
}
