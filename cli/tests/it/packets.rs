//! Cross-city exchange on a running devnet: records sent from one city are accepted in
//! another through the bridges, each acceptance proven at level final and checked offline by
//! `urbis verify --genesis`; a capital transfer and its return trip conserve value.

use crate::devnet::{running_devnet, sigterm, validator_apis, verify_offline};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub(crate) fn submit(client: &Client, city: &Value, service: &str, record: Value) -> Value {
    let r = client
        .post(format!("{}/v1/records", city["shard_api"].as_str().unwrap()))
        .bearer_auth(city["service_tokens"][service].as_str().unwrap())
        .json(&json!({ "records": [record] }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert_eq!(status, 200, "{v}");
    v["records"][0].clone()
}

/// Polls `GET /v1/packets/...` at `city` until `done` holds (bounded).
pub(crate) fn wait_packet(
    client: &Client,
    city: &Value,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("{}/v1/packets/{path}", city["shard_api"].as_str().unwrap());
    loop {
        if let Ok(r) = client.get(&url).send()
            && r.status().is_success()
        {
            let v: Value = r.json().unwrap();
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {v}");
        } else {
            assert!(Instant::now() < deadline, "{what}: {url} did not answer");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn amount(client: &Client, city: &Value, key: Value) -> u128 {
    let hex_key = hex::encode(urbis_core::encoding::encode(
        &serde_json::from_value::<urbis_core::state::StateKey>(key).unwrap(),
    ));
    let v: Value = client
        .get(format!("{}/v1/state/{hex_key}/proof", city["shard_api"].as_str().unwrap()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    match v["proof"]["value"].as_str() {
        None => 0,
        Some(h) => urbis_core::encoding::decode::<u128>(&hex::decode(h).unwrap()).unwrap(),
    }
}

fn number(v: &Value) -> u128 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0,
        other => other.as_u64().unwrap().into(),
    }
}

/// Every city's `GET /v1/capital/totals` added up for EUR (issued by the first city):
/// issued = issuer balances + escrows, and for every other city C, escrow for C = vouchers at
/// C + what is in flight between them. Returns the amount in flight (0 once all is settled).
pub(crate) fn conservation(client: &Client, cities: &[Value], issued: u128) -> u128 {
    let totals: Vec<Value> = cities
        .iter()
        .map(|c| {
            client
                .get(format!("{}/v1/capital/totals", c["shard_api"].as_str().unwrap()))
                .send()
                .unwrap()
                .json()
                .unwrap()
        })
        .collect();
    let eur = |t: &Value| {
        t["assets"].as_array().unwrap().iter().find(|a| a["asset"] == "EUR").unwrap().clone()
    };
    let issuer = eur(&totals[0]);
    let escrows: u128 = issuer["escrows"].as_object().unwrap().values().map(number).sum();
    assert_eq!(number(&issuer["balances"]) + escrows, issued, "issued supply: {totals:?}");
    let mut in_flight_total = 0;
    for (c, t) in cities.iter().zip(&totals).skip(1) {
        let name = c["name"].as_str().unwrap();
        let here = eur(t);
        let escrow = number(&issuer["escrows"][name]);
        let vouchers = number(&here["vouchers"]);
        let in_flight = number(&issuer["in_flight"][name])
            + number(&here["in_flight"][cities[0]["name"].as_str().unwrap()]);
        in_flight_total += in_flight;
        // A packet received but not yet acknowledged is counted at both ends, so while
        // anything is in flight the escrow lies between the two sides.
        assert!(
            vouchers.saturating_sub(in_flight) <= escrow && escrow <= vouchers + in_flight,
            "escrow for {name} {escrow}, vouchers {vouchers}, in flight {in_flight}: {totals:?}"
        );
        if in_flight == 0 {
            assert_eq!(escrow, vouchers, "{totals:?}");
        }
    }
    in_flight_total
}

/// Writes a state fact's proof to `out` and checks it with `urbis verify --genesis --key
/// --city` as an outsider would, offline; returns what the command printed.
fn verify_state_offline(
    out: &std::path::Path,
    proof: &Value,
    m: &Value,
    key: &Value,
    city: &str,
) -> Value {
    std::fs::write(out, serde_json::to_vec(proof).unwrap()).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_urbis"))
        .arg("verify")
        .arg(out)
        .arg("--genesis")
        .arg(m["genesis"].as_str().unwrap())
        .args(["--key", &key.to_string(), "--city", city])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn records_sent_from_one_city_are_accepted_in_another_with_offline_proofs() {
    let (dir, child, m) = running_devnet(&[]);
    let cities = m["cities"].as_array().unwrap().clone();
    let client = Client::new();
    let (a, b) = (&cities[0], &cities[1]);
    let (an, bn) = (a["name"].as_str().unwrap(), b["name"].as_str().unwrap());
    let subject = "22".repeat(32);
    // EUR is issued by the first city.
    submit(
        &client,
        a,
        "treasury",
        json!({"kind": "capital", "subject": subject, "payload": {"asset": "EUR", "amount": 1000, "operation": "issue", "to": "alice"}}),
    );
    let sent = [
        submit(
            &client,
            a,
            "treasury",
            json!({"kind": "capital", "subject": subject, "to_city": bn, "payload": {"asset": "EUR", "amount": 300, "operation": "send", "from": "alice", "to": "bob"}}),
        ),
        submit(
            &client,
            a,
            "hr-bureau",
            json!({"kind": "talent", "subject": subject, "to_city": bn, "payload": {"action": "issue", "credential_id": "33".repeat(32), "document": {"licence": "architect"}}}),
        ),
        submit(
            &client,
            a,
            "open-data-office",
            json!({"kind": "information", "subject": subject, "to_city": bn, "payload": {"dataset": "permits", "media_type": "application/json", "content": {"permit": 7}}}),
        ),
        submit(
            &client,
            a,
            "credit-bureau",
            json!({"kind": "credit", "subject": subject, "to_city": bn, "payload": {"report": {"score": 710, "note": "CROSS-CITY-CREDIT-MARKER-5d1e"}}}),
        ),
    ];
    let sequences: Vec<u64> = sent.iter().map(|r| r["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, [1, 2, 3, 4], "{sent:?}");
    // Escrowed at the source the moment the send is sealed.
    assert_eq!(
        amount(&client, a, json!({"type": "balance", "asset": "EUR", "account": "alice"})),
        700
    );
    assert_eq!(
        amount(&client, a, json!({"type": "escrow", "asset": "EUR", "destination": 1})),
        300
    );
    for (r, sequence) in sent.iter().zip(&sequences) {
        let path = format!("{an}/{bn}/{sequence}");
        // Accepted at the destination, proven final, and the proof checks offline.
        let at_b = wait_packet(&client, b, &path, "received in B at level final", |v| {
            v["state"] == "received" && v["level"] == "final"
        });
        let out = dir.path().join(format!("receipt-{sequence}.json"));
        let key =
            json!({"type": "packet_receipt", "source": 0, "destination": 1, "sequence": sequence});
        let verified = verify_state_offline(&out, &at_b["proof"], &m, &key, bn);
        assert_eq!(verified["level"], "final", "{verified}");
        // The receipt names the record that was sent, with B's answer.
        let receipt_value = at_b["proof"]["value"].as_str().unwrap();
        let receipt: urbis_core::packet::Receipt =
            urbis_core::encoding::decode(&hex::decode(receipt_value).unwrap()).unwrap();
        assert_eq!(receipt.record_id.to_hex(), r["id"].as_str().unwrap());
        assert_eq!(receipt.acknowledgement, urbis_core::packet::Acknowledgement::Success);
        // And the source holds the acknowledgement: settled exactly once, its outcome proven
        // in the settlements of its range of sequences, which check offline too.
        let at_a = wait_packet(&client, a, &path, "acknowledged in A at level final", |v| {
            v["state"] == "acknowledged" && v["level"] == "final"
        });
        let bucket = *sequence / urbis_core::packet::SETTLEMENT_BUCKET_SIZE;
        let key =
            json!({"type": "packet_settlements", "source": 0, "destination": 1, "bucket": bucket});
        assert_eq!(at_a["proof"]["key"], key, "{at_a}");
        let settlements: urbis_core::packet::Settlements = urbis_core::encoding::decode(
            &hex::decode(at_a["proof"]["value"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        assert!(
            matches!(
                settlements.outcome(*sequence),
                Some(urbis_core::packet::PacketOutcome::Acknowledged { .. })
            ),
            "{settlements:?}"
        );
        let out = dir.path().join(format!("settlements-{sequence}.json"));
        verify_state_offline(&out, &at_a["proof"], &m, &key, an);
        // The sent record itself verifies offline at level final in its source city.
        let record: Value = client
            .get(format!(
                "{}/v1/records/{}",
                a["shard_api"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if record["level"] == "final" {
            verify_offline(
                &dir.path().join(format!("record-{sequence}.json")),
                &record["proof"],
                &m,
            );
        }
    }
    // The transfer credited a voucher at B; the escrow at A backs it.
    assert_eq!(
        amount(&client, b, json!({"type": "voucher", "asset": "EUR", "account": "bob"})),
        300
    );
    // The credit report travelled beside its packet and opens its commitment at B.
    // The credit report is erased at its source: the erasure travels and erases B's copy
    // (which B's files hold until then).
    assert!(
        !crate::shard::files_containing(&dir.path().join(bn), b"CROSS-CITY-CREDIT-MARKER-5d1e")
            .is_empty(),
        "B's files should hold the report's copy before the erasure"
    );
    let r = client
        .delete(format!(
            "{}/v1/records/{}/payload",
            a["shard_api"].as_str().unwrap(),
            sent[3]["id"].as_str().unwrap()
        ))
        .bearer_auth(a["service_tokens"]["credit-bureau"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let url = format!("{}/v1/packets/{an}/{bn}/4/payload", b["shard_api"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .get(&url)
            .bearer_auth(b["service_tokens"]["credit-bureau"].as_str().unwrap())
            .send()
            .unwrap();
        match r.status().as_u16() {
            410 => break,
            200 => assert!(Instant::now() < deadline, "B kept the erased credit report"),
            other => panic!("{other}: {}", r.text().unwrap()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // No byte of it is left in B's files (the RocksDB files and log of B's shard). RocksDB
    // deletes the files the purge made obsolete once no reader still holds them: moments later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hits =
            crate::shard::files_containing(&dir.path().join(bn), b"CROSS-CITY-CREDIT-MARKER-5d1e");
        if hits.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "B's files still hold the erased report: {hits:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The credential's copy is untouched.
    let url = format!("{}/v1/packets/{an}/{bn}/2/payload", b["shard_api"].as_str().unwrap());
    let r = client
        .get(&url)
        .bearer_auth(b["service_tokens"]["hr-bureau"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Return trip: bob sends 100 of his vouchers home to carol in A.
    let back = submit(
        &client,
        b,
        "treasury",
        json!({"kind": "capital", "subject": subject, "to_city": an, "payload": {"asset": "EUR", "amount": 100, "operation": "send", "from": "bob", "to": "carol"}}),
    );
    let sequence = back["sequence"].as_u64().unwrap();
    assert_eq!(sequence, 1);
    let path = format!("{bn}/{an}/{sequence}");
    wait_packet(&client, a, &path, "voucher received home", |v| {
        v["state"] == "received" && v["level"] == "final"
    });
    wait_packet(&client, b, &path, "return acknowledged in B", |v| v["state"] == "acknowledged");
    assert_eq!(
        amount(&client, b, json!({"type": "voucher", "asset": "EUR", "account": "bob"})),
        200
    );
    assert_eq!(
        amount(&client, a, json!({"type": "balance", "asset": "EUR", "account": "carol"})),
        100
    );
    assert_eq!(
        amount(&client, a, json!({"type": "escrow", "asset": "EUR", "destination": 1})),
        200
    );
    // Conservation: issued 1000 = balances at the issuer (700 + 100) + escrows (200), and the
    // escrow for B (200) = vouchers outstanding at B (200), nothing in flight.
    assert_eq!(conservation(&client, &cities, 1000), 0);
    // Each bridge counts what it relayed; nothing is stuck.
    let metrics = scrape(&client, a["bridge_api"].as_str().unwrap());
    let settled = sample(
        &metrics,
        &format!("urbis_bridge_packets_total{{destination=\"{bn}\",result=\"settled\"}}"),
    )
    .unwrap_or_else(|| panic!("{metrics}"));
    assert!(settled >= 4.0, "{metrics}");
    assert!(
        metrics.contains(&format!(
            "urbis_bridge_oldest_unsettled_packet_age_seconds{{destination=\"{bn}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("urbis_build_info{"), "{metrics}");
    let shard_metrics = scrape(&client, a["shard_api"].as_str().unwrap());
    assert!(
        shard_metrics.contains(&format!(
            "urbis_shard_oldest_unsettled_packet_age_seconds{{destination=\"{bn}\"}} 0.0"
        )),
        "{shard_metrics}"
    );
    assert!(
        shard_metrics.contains(&format!("urbis_shard_packets_sent{{destination=\"{bn}\"}} 4")),
        "{shard_metrics}"
    );
    let r = client.get(format!("{}/readyz", b["bridge_api"].as_str().unwrap())).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(sigterm(child).success());
}

/// The `/metrics` text of the role at `base`.
fn scrape(client: &Client, base: &str) -> String {
    client.get(format!("{base}/metrics")).send().unwrap().text().unwrap()
}

/// The value of one series (name and labels, as written) in a metrics text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// POSTs `body` to a shard's `/v1/packets`; returns the status and the JSON answer.
fn post_packet(client: &Client, city: &Value, body: &Value) -> (u16, Value) {
    let r = client
        .post(format!("{}/v1/packets", city["shard_api"].as_str().unwrap()))
        .json(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// `POST /v1/packets/batch` of `body` (JSON) at `city`, which answers 200: its results.
fn post_batch(client: &Client, city: &Value, body: String) -> Vec<Value> {
    let r = client
        .post(format!("{}/v1/packets/batch", city["shard_api"].as_str().unwrap()))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let batch: Value = r.json().unwrap();
    batch["results"].as_array().unwrap().clone()
}

/// A batch result as `refused` reads an answer: its status and its problem.
fn item_answer(result: &Value) -> (u16, Value) {
    (result["status"].as_u64().unwrap() as u16, result["problem"].clone())
}

/// Asserts a refusal: its status, its problem type and a phrase of its detail.
fn refused(answer: (u16, Value), status: u16, slug: &str, phrase: &str, case: &str) {
    let (got, problem) = answer;
    assert_eq!(got, status, "{case}: {problem}");
    assert!(
        problem["type"].as_str().unwrap_or_default().ends_with(slug),
        "{case}: problem type {problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap_or_default().contains(phrase),
        "{case}: detail should name `{phrase}`: {problem}"
    );
}

fn flip_hex(v: &mut Value) {
    let s = v.as_str().unwrap().to_string();
    let first = if s.starts_with('0') { '1' } else { '0' };
    *v = Value::String(format!("{first}{}", &s[1..]));
}

/// The latest sealed height (`None` before the first block).
fn latest_height(client: &Client, city: &Value) -> Option<u64> {
    let v: Value = client
        .get(format!("{}/v1/blocks/latest", city["shard_api"].as_str().unwrap()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["header"]["header"]["height"].as_u64()
}

fn final_fact(client: &Client, city: &Value, key: &urbis_core::state::StateKey) -> Value {
    final_fact_where(client, city, key, |_| true)
}

/// The first final state proof of `key` at `city` whose answer satisfies `done` (bounded).
fn final_fact_where(
    client: &Client,
    city: &Value,
    key: &urbis_core::state::StateKey,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let hex_key = hex::encode(urbis_core::encoding::encode(key));
    let url =
        format!("{}/v1/state/{hex_key}/proof?level=final", city["shard_api"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = client.get(&url).send().unwrap().json().unwrap();
        if v["level"] == "final" && done(&v) {
            return v["proof"].clone();
        }
        assert!(Instant::now() < deadline, "nothing final: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A packet from city 0 to city 1 of a federation of the same shape but another genesis.
fn packet_from_another_federation() -> Value {
    let federation = urbis_core::testkit::Federation::new("another federation", 3, 4);
    json!({"type": "packet", "proof": urbis_core::testkit::first_packet(&federation, 1_000_000)})
}

#[test]
fn a_hostile_relay_over_real_sockets_gets_specific_errors_and_every_packet_ends_once() {
    use urbis_core::record::CityId;
    let (dir, child, m) = running_devnet(&["--no-bridges", "--packet-timeout-blocks", "30"]);
    let cities = m["cities"].as_array().unwrap().clone();
    let client = Client::new();
    let validators = validator_apis(&m);
    let (a, b, c) = (&cities[0], &cities[1], &cities[2]);
    let (an, bn) = (a["name"].as_str().unwrap(), b["name"].as_str().unwrap());
    let subject = "44".repeat(32);
    let send = |amount: u64| json!({"kind": "capital", "subject": subject, "to_city": bn, "payload": {"asset": "EUR", "amount": amount, "operation": "send", "from": "alice", "to": "bob"}});
    submit(
        &client,
        a,
        "treasury",
        json!({"kind": "capital", "subject": subject, "payload": {"asset": "EUR", "amount": 1000, "operation": "issue", "to": "alice"}}),
    );
    submit(&client, a, "treasury", send(100));
    submit(&client, a, "treasury", send(200));
    // Packets 3 and 4 in one block: the same timeout.
    let r = client
        .post(format!("{}/v1/records", a["shard_api"].as_str().unwrap()))
        .bearer_auth(a["service_tokens"]["treasury"].as_str().unwrap())
        .json(&json!({"records": [send(50), send(10)]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(conservation(&client, &cities, 1000), 360);
    // The relay reads A's final outbound packets.
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page: Value = client
            .get(format!(
                "{}/v1/packets/outbound?destination={bn}",
                a["shard_api"].as_str().unwrap()
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if page["packets"].as_array().unwrap().len() == 4 {
            break page;
        }
        assert!(Instant::now() < deadline, "packets did not become final: {page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The same page grouped, as A's bridge reads it: one group per sending block (packets 3
    // and 4 together), whose shared parts with each packet's own are its proof.
    let groups: Value = client
        .get(format!(
            "{}/v1/packets/outbound/groups?destination={bn}",
            a["shard_api"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let items = groups["items"].as_array().unwrap();
    let sizes: Vec<usize> = items.iter().map(|g| g["packets"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [1, 1, 2], "{groups}");
    let grouped: Vec<Value> = items
        .iter()
        .flat_map(|g| {
            g["packets"].as_array().unwrap().iter().map(move |p| {
                let mut proof =
                    json!({"sequence": p["sequence"], "path": p["path"], "record": p["record"]});
                for field in ["batch", "batch_proof", "header", "finality"] {
                    proof[field] = g[field].clone();
                }
                proof
            })
        })
        .collect();
    let plain: Vec<Value> =
        page["packets"].as_array().unwrap().iter().map(|p| p["proof"].clone()).collect();
    assert_eq!(grouped, plain);
    assert_eq!(groups["sent"], page["sent"]);
    let packet = |i: usize| json!({"type": "packet", "proof": page["packets"][i]["proof"]});
    let timeout_height = page["packets"][2]["proof"]["batch"]["timeout_height"].as_u64().unwrap();
    // The two transfers of one request were sent by one block, as one batch.
    assert_eq!(page["packets"][3]["proof"]["batch"], page["packets"][2]["proof"]["batch"]);
    // Where packet 4 is at A: sent, proven by its channel's batch at the block that sent it,
    // with the path of its record id in the batch's tree; the batch fact checks offline.
    let sequence = page["packets"][3]["sequence"].as_u64().unwrap();
    let at_a = wait_packet(&client, a, &format!("{an}/{bn}/{sequence}"), "sent, final", |v| {
        v["state"] == "sent" && v["level"] == "final"
    });
    let key = json!({"type": "outbound_batch", "source": 0, "destination": 1});
    assert_eq!(at_a["proof"]["key"], key, "{at_a}");
    assert_eq!(at_a["timeout_height"].as_u64(), Some(timeout_height));
    let batch: urbis_core::packet::OutboundBatch = urbis_core::encoding::decode(
        &hex::decode(at_a["proof"]["value"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(serde_json::to_value(batch).unwrap(), page["packets"][3]["proof"]["batch"]);
    let record: urbis_core::record::Record =
        serde_json::from_value(page["packets"][3]["proof"]["record"].clone()).unwrap();
    assert_eq!(at_a["record_id"].as_str(), Some(record.id().to_hex().as_str()));
    let path: urbis_core::merkle::InclusionProof =
        serde_json::from_value(at_a["batch_path"].clone()).unwrap();
    assert_eq!(path.leaf_index, sequence - batch.first_sequence);
    let tree = urbis_core::merkle::Blake3Tree::outbound_batch();
    use urbis_core::merkle::TreeHasher;
    path.verify(&tree, &tree.leaf(record.id().as_bytes()), &batch.root).unwrap();
    verify_state_offline(&dir.path().join("sent-batch.json"), &at_a["proof"], &m, &key, an);
    let b_height = latest_height(&client, b);

    // Hostile packets: each refused with its own link named, nothing written at B.
    let mut p = packet(0);
    flip_hex(&mut p["proof"]["header"]["signature"]);
    refused(post_packet(&client, b, &p), 422, "invalid-proof", "shard header seal", "mutated seal");
    let mut p = packet(0);
    p["proof"]["record"]["body"]["amount"] = json!("1000");
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "record path in the batch",
        "mutated amount",
    );
    let mut p = packet(3);
    p["proof"]["batch"]["timeout_height"] = json!(timeout_height + 1_000);
    refused(post_packet(&client, b, &p), 422, "invalid-proof", "batch path", "longer timeout");
    let mut p = packet(3);
    p["proof"]["batch"]["count"] = json!(3);
    refused(post_packet(&client, b, &p), 422, "invalid-proof", "batch path", "a longer batch");
    // Packet 4's proof claimed as packet 3: its path is of another leaf of the batch.
    let mut p = packet(3);
    p["proof"]["sequence"] = page["packets"][2]["sequence"].clone();
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "the path is of leaf",
        "another sequence",
    );
    let mut p = packet(3);
    p["proof"]["sequence"] = json!(1_000_000);
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "is not in the batch",
        "a sequence the batch does not hold",
    );
    let mut p = packet(0);
    p["proof"]["finality"]["beacon_header"]["time_ms"] = json!(1);
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "beacon block",
        "forged beacon block",
    );
    // Packet 4's path, renumbered as packet 3's leaf: a Merkle path for another leaf.
    let mut p = packet(2);
    p["proof"]["path"]["path"] = page["packets"][3]["proof"]["path"]["path"].clone();
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "record path in the batch",
        "another leaf's path",
    );
    // Packet 4's record carried under packet 3's sequence and path.
    let mut p = packet(2);
    p["proof"]["record"] = page["packets"][3]["proof"]["record"].clone();
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "record path in the batch",
        "another record under a packet's sequence",
    );
    // Resealed with a key that is not the city's.
    let mut p = packet(0);
    let mut header: urbis_core::header::SignedShardHeader =
        serde_json::from_value(p["proof"]["header"].clone()).unwrap();
    let federation_id: urbis_core::hash::Hash32 =
        serde_json::from_value(m["federation_id"].clone()).unwrap();
    let wrong =
        urbis_core::sealing::SealingKey::from_seed(&urbis_core::testkit::seed("not a city"));
    header = header.header.seal(&federation_id, &wrong);
    p["proof"]["header"] = serde_json::to_value(&header).unwrap();
    refused(
        post_packet(&client, b, &p),
        422,
        "invalid-proof",
        "shard header seal",
        "wrong sealing key",
    );
    refused(
        post_packet(&client, b, &packet_from_another_federation()),
        422,
        "invalid-proof",
        "shard header seal",
        "another federation",
    );
    refused(
        post_packet(&client, c, &packet(0)),
        422,
        "invalid-proof",
        "addressed to",
        "another destination",
    );
    refused(
        post_packet(&client, b, &json!({"type": "packet", "proof": {"sequence": 1}})),
        422,
        "invalid-record",
        "missing field",
        "malformed",
    );
    // Packets 3 and 4 as one group (what a bridge hands its shard: the parts of their proofs
    // they share written once), with a forged beacon block: each packet of the group is
    // refused on its own, with the error it gets alone. An empty group is refused; a group is
    // read only in a batch.
    let group = |finality: &Value, members: &[usize]| {
        let shared = &page["packets"][2]["proof"];
        let packets: Vec<Value> = members
            .iter()
            .map(|i| {
                let p = &page["packets"][*i]["proof"];
                json!({"sequence": p["sequence"], "path": p["path"], "record": p["record"], "payload": null})
            })
            .collect();
        json!({"type": "packets", "batch": shared["batch"], "batch_proof": shared["batch_proof"], "header": shared["header"], "finality": finality, "packets": packets})
    };
    let finality = &page["packets"][2]["proof"]["finality"];
    let mut forged = finality.clone();
    forged["beacon_header"]["time_ms"] = json!(1);
    // Beside them, a packet of the group that does not read.
    let mut with_unreadable = group(&forged, &[2, 3]);
    with_unreadable["packets"].as_array_mut().unwrap().push(json!({"sequence": "x"}));
    // A group whose shared parts are larger than a group may carry (each packet would be
    // checked with its own copy): every packet it holds is refused.
    let shared = &page["packets"][2]["proof"];
    let finality_json = finality.to_string();
    let oversized = format!(
        r#"{{"type":"packets","batch":{},"batch_proof":{},"header":{},"finality":{{{}{},"packets":{}}}"#,
        shared["batch"],
        shared["batch_proof"],
        shared["header"],
        " ".repeat(urbis_core::packet::GROUP_SHARED_JSON_MAX),
        &finality_json[1..],
        group(finality, &[2, 3])["packets"],
    );
    let body = format!(r#"{{"items":[{with_unreadable},{oversized},{}]}}"#, group(finality, &[]));
    let results = post_batch(&client, b, body);
    assert_eq!(results.len(), 6, "one result per packet of a group: {results:?}");
    let answer = |i: usize| item_answer(&results[i]);
    refused(answer(0), 422, "invalid-proof", "beacon block", "packet 3 in a group");
    refused(answer(1), 422, "invalid-proof", "beacon block", "packet 4 in a group");
    refused(answer(2), 422, "invalid-record", "invalid type", "an unreadable packet in a group");
    refused(answer(3), 422, "invalid-record", "shared parts", "packet 3 in an oversized group");
    refused(answer(4), 422, "invalid-record", "shared parts", "packet 4 in an oversized group");
    refused(answer(5), 422, "invalid-record", "at least one packet", "an empty group");
    refused(
        post_packet(&client, b, &group(finality, &[2, 3])),
        422,
        "invalid-record",
        "unknown variant",
        "a group outside a batch",
    );
    assert_eq!(latest_height(&client, b), b_height, "a refused packet wrote something at B");
    // B counts each refusal by the link that failed.
    let metrics = scrape(&client, b["shard_api"].as_str().unwrap());
    let failures = |link: &str| {
        sample(&metrics, &format!("urbis_proof_verification_failures_total{{link=\"{link}\"}}"))
            .unwrap_or(0.0)
    };
    assert!(failures("shard_header") >= 3.0, "{metrics}");
    assert!(failures("batch_path") >= 7.0, "{metrics}");
    assert!(failures("beacon_certificate") >= 1.0, "{metrics}");

    // Reordered: packet 2 first. Duplicates at once: exactly one is received.
    let p2 = packet(1);
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..5).map(|_| s.spawn(|| post_packet(&Client::new(), b, &p2))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 1, "{answers:?}");
    for (status, problem) in answers.into_iter().filter(|(s, _)| *s != 200) {
        refused(
            (status, problem),
            409,
            "packet-duplicate",
            "already received",
            "concurrent duplicate",
        );
    }
    // In a batch, an item that does not read as a packet is refused alone; the packet beside
    // it is received.
    let body = json!({"items": [{"type": "packet", "proof": {"sequence": "one"}}, packet(0)]});
    let results = post_batch(&client, b, body.to_string());
    assert_eq!(results.len(), 2, "{results:?}");
    refused(
        item_answer(&results[0]),
        422,
        "invalid-record",
        "invalid type",
        "an unreadable item in a batch",
    );
    assert_eq!(results[1]["status"], 200, "{results:?}");
    assert_eq!(results[1]["response"]["state"], "received", "{results:?}");
    refused(
        post_packet(&client, b, &packet(0)),
        409,
        "packet-duplicate",
        "already received",
        "replay",
    );
    let (status, v) = post_packet(&client, b, &packet(3));
    assert_eq!(status, 200, "{v}");
    conservation(&client, &cities, 1000);

    // Before the timeout, a timeout proof built from B's latest final header is refused.
    let id3 =
        urbis_core::packet::PacketId { source: CityId(0), destination: CityId(1), sequence: 3 };
    let early = loop {
        let view = final_fact(&client, b, &urbis_core::state::StateKey::BeaconView);
        let absent = final_fact(&client, b, &id3.receipt_key());
        if view["header"] == absent["header"] {
            let beacon_view: u64 = urbis_core::encoding::decode(
                &hex::decode(view["value"].as_str().unwrap()).unwrap(),
            )
            .unwrap();
            assert!(beacon_view < timeout_height, "the test waited too long");
            break json!({"type": "timeout", "packet": id3, "proof": {"receipt_absence": absent["proof"], "beacon_view": beacon_view, "beacon_view_proof": view["proof"], "header": view["header"], "finality": view["finality"]}});
        }
    };
    refused(
        post_packet(&client, a, &early),
        422,
        "invalid-proof",
        "certified view",
        "timeout before the timeout",
    );

    // Acknowledgements travel back; a forged or repeated one is refused.
    let ack = |sequence: u64| {
        let s = wait_packet(
            &client,
            b,
            &format!("{an}/{bn}/{sequence}"),
            "final acknowledgement",
            |v| v["acknowledgement_proof"].is_object(),
        );
        s["acknowledgement_proof"].clone()
    };
    let ack1 = ack(1);
    let id = |sequence: u64| json!({"source": 0, "destination": 1, "sequence": sequence});
    refused(
        post_packet(
            &client,
            a,
            &json!({"type": "acknowledgement", "packet": id(3), "proof": ack1}),
        ),
        422,
        "invalid-proof",
        "acknowledgement path",
        "another packet's acknowledgement",
    );
    let mut forged = ack1.clone();
    forged["acknowledgement"] = json!({"result": "error", "error": "unknown_asset"});
    refused(
        post_packet(
            &client,
            a,
            &json!({"type": "acknowledgement", "packet": id(1), "proof": forged}),
        ),
        422,
        "invalid-proof",
        "acknowledgement path",
        "an error acknowledgement where B wrote success",
    );
    // The same two in an acknowledgements group (header and finality once): each is refused
    // on its own, with its own error.
    let member = |packet: Value, proof: &Value| json!({"packet": packet, "acknowledgement": proof["acknowledgement"], "proof": proof["proof"]});
    let group = json!({"items": [{"type": "acknowledgements", "header": ack1["header"], "finality": ack1["finality"],
        "acknowledgements": [member(id(3), &ack1), member(id(1), &forged)]}]});
    let results = post_batch(&client, a, group.to_string());
    assert_eq!(results.len(), 2, "{results:?}");
    for (result, case) in results.iter().zip(["another packet's, grouped", "forged, grouped"]) {
        refused(item_answer(result), 422, "invalid-proof", "acknowledgement path", case);
    }
    // The same two as a destination bridge's answers, handed on as they came
    // (`POST /v1/packets/answers`): each is refused on its own, with its own error; the
    // other answers are reported back and settle nothing.
    let answers = |packets: Value, document: &str| -> (u16, Value) {
        let r = client
            .post(format!("{}/v1/packets/answers", a["shard_api"].as_str().unwrap()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(format!(
                r#"{{"packets":{packets},"trace_contexts":{},"answers":{document}}}"#,
                json!(vec![Value::Null; packets.as_array().unwrap().len()])
            ))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let document = |shared: Value| {
        json!({"shared": shared, "results": [
            {"type": "acknowledged", "shared": 0, "acknowledgement": ack1["acknowledgement"], "proof": ack1["proof"]},
            {"type": "acknowledged", "shared": 0, "acknowledgement": forged["acknowledgement"], "proof": forged["proof"]},
            {"type": "pending", "detail": "not final yet"},
            {"type": "refused", "status": 422, "detail": "no such recipient"}]})
        .to_string()
    };
    let shared = json!([{"header": ack1["header"], "finality": ack1["finality"]}]);
    let four = json!([id(3), id(1), id(2), id(4)]);
    let (status, v) = answers(four.clone(), &document(shared.clone()));
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{v}");
    for (result, case) in results.iter().zip(["another packet's, answered", "forged, answered"]) {
        assert_eq!(result["answer"], "acknowledged", "{case}: {result}");
        refused(
            item_answer(&result["settlement"]),
            422,
            "invalid-proof",
            "acknowledgement path",
            case,
        );
    }
    assert_eq!(
        (&results[2]["answer"], &results[2]["detail"]),
        (&json!("pending"), &json!("not final yet"))
    );
    assert!(results[2].get("settlement").is_none(), "{v}");
    assert_eq!(
        (&results[3]["answer"], &results[3]["destination_status"]),
        (&json!("refused"), &json!(422))
    );
    // An answer that does not read, or names shared parts that are not there, is refused
    // alone: the others stand.
    let (status, v) = answers(four.clone(), &document(json!([])));
    assert_eq!(status, 200, "{v}");
    for r in &v["results"].as_array().unwrap()[..2] {
        assert_eq!(r["answer"], "unreadable", "{v}");
        assert!(r["detail"].as_str().unwrap().contains("no shared parts numbered 0"), "{v}");
        assert!(r.get("settlement").is_none(), "{v}");
    }
    assert_eq!(
        (&v["results"][2]["answer"], &v["results"][3]["answer"]),
        (&json!("pending"), &json!("refused"))
    );
    let bogus = json!({"results": [{"type": "timed_out", "proof": {"receipt_absence": 1}}, {"type": "pending", "detail": "later"}]});
    let (status, v) = answers(json!([id(3), id(1)]), &bogus.to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["results"][0]["answer"], &v["results"][1]["answer"]),
        (&json!("unreadable"), &json!("pending")),
        "{v}"
    );
    // Answers refused whole: not one per packet, or trying to stand for the fields written
    // before them.
    let (status, v) = answers(json!([id(1)]), &document(shared.clone()));
    refused((status, v), 422, "invalid-record", "4 answers for 1 packets", "answers miscounted");
    for field in ["packets", "trace_contexts"] {
        let injected = format!(
            r#"{},"{field}":{}"#,
            document(shared.clone()),
            json!([id(1), id(2), id(3), id(4)])
        );
        let (status, v) = answers(four.clone(), &injected);
        refused((status, v), 422, "invalid-record", &format!("duplicate field `{field}`"), field);
    }
    let (status, v) = post_packet(
        &client,
        a,
        &json!({"type": "acknowledgement", "packet": id(1), "proof": ack1}),
    );
    assert_eq!((status, v["state"].as_str()), (200, Some("acknowledged")), "{v}");
    refused(
        post_packet(
            &client,
            a,
            &json!({"type": "acknowledgement", "packet": id(1), "proof": ack1}),
        ),
        409,
        "packet-settled",
        "already settled",
        "second acknowledgement",
    );
    let (status, v) = post_packet(
        &client,
        a,
        &json!({"type": "acknowledgement", "packet": id(2), "proof": ack(2)}),
    );
    assert_eq!(status, 200, "{v}");
    conservation(&client, &cities, 1000);

    // Packet 3 was dropped: once B's certified view passes the timeout, B proves its absence.
    let deadline = Instant::now() + Duration::from_secs(90);
    let url = format!(
        "{}/v1/packets/{an}/{bn}/3/timeout-proof?timeout_height={timeout_height}",
        b["shard_api"].as_str().unwrap()
    );
    let timeout3 = loop {
        let r = client.get(&url).send().unwrap();
        if r.status().is_success() {
            break r.json::<Value>().unwrap();
        }
        assert_eq!(r.status().as_u16(), 409);
        assert!(Instant::now() < deadline, "no timeout proof: {}", r.text().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    };
    // A's stuck-packet signal: packet 3 has waited unsettled since it was sent.
    let metrics = scrape(&client, a["shard_api"].as_str().unwrap());
    let gauge = |name: &str| {
        sample(&metrics, &format!("{name}{{destination=\"{bn}\"}}"))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(gauge("urbis_shard_oldest_unsettled_packet_age_seconds") > 1.0, "{metrics}");
    assert_eq!(gauge("urbis_shard_packets_sent"), 4.0);
    // Packet 4 was received but not acknowledged: packet 3's absence proof does not prove its.
    refused(
        post_packet(&client, a, &json!({"type": "timeout", "packet": id(4), "proof": timeout3})),
        422,
        "invalid-proof",
        "receipt absence path",
        "absence proof for a present receipt",
    );
    // Delivered past its timeout: refused by B's own view.
    refused(
        post_packet(&client, b, &packet(2)),
        409,
        "packet-timed-out",
        "timed out",
        "delivery past the timeout",
    );
    let (status, v) =
        post_packet(&client, a, &json!({"type": "timeout", "packet": id(3), "proof": timeout3}));
    assert_eq!((status, v["state"].as_str()), (200, Some("refunded")), "{v}");
    refused(
        post_packet(&client, a, &json!({"type": "timeout", "packet": id(3), "proof": timeout3})),
        409,
        "packet-settled",
        "already settled",
        "second refund",
    );
    refused(
        post_packet(
            &client,
            a,
            &json!({"type": "acknowledgement", "packet": id(3), "proof": ack1}),
        ),
        409,
        "packet-settled",
        "already settled",
        "acknowledgement after a refund",
    );
    refused(
        post_packet(&client, b, &packet(2)),
        409,
        "packet-timed-out",
        "timed out",
        "delivery after a refund",
    );
    let (status, v) = post_packet(
        &client,
        a,
        &json!({"type": "acknowledgement", "packet": id(4), "proof": ack(4)}),
    );
    assert_eq!(status, 200, "{v}");

    // Every packet ended exactly once, and value is conserved with nothing in flight.
    for (sequence, state) in
        [(1, "acknowledged"), (2, "acknowledged"), (3, "refunded"), (4, "acknowledged")]
    {
        wait_packet(&client, a, &format!("{an}/{bn}/{sequence}"), state, |v| v["state"] == state);
    }
    assert_eq!(
        amount(&client, a, json!({"type": "balance", "asset": "EUR", "account": "alice"})),
        690
    );
    assert_eq!(
        amount(&client, b, json!({"type": "voucher", "asset": "EUR", "account": "bob"})),
        310
    );
    assert_eq!(conservation(&client, &cities, 1000), 0);

    // Misbehaviour: A seals a second header at a crosslinked height. The validators record the
    // evidence in a block; B's follower checks it and freezes packets from A.
    crate::devnet::conflicting_header_is_evidence(&client, dir.path(), &m, a, &validators[0]);
    let channel = format!("{}/v1/channels/{an}", b["shard_api"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = client.get(&channel).send().unwrap().json().unwrap();
        if v["frozen"] == true {
            assert_eq!(v["evidence"]["first"]["header"]["city"], 0, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "B did not freeze A's packets: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A packet from A is answered with an error acknowledgement, and A refunds it.
    let deliver_next = |sequence: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let proof = loop {
            let page: Value = client
                .get(format!(
                    "{}/v1/packets/outbound?destination={bn}&after={}",
                    a["shard_api"].as_str().unwrap(),
                    sequence - 1
                ))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if let Some(p) = page["packets"].as_array().unwrap().first() {
                assert_eq!(p["sequence"].as_u64(), Some(sequence));
                break p["proof"].clone();
            }
            assert!(Instant::now() < deadline, "packet {sequence} did not become final");
            std::thread::sleep(Duration::from_millis(100));
        };
        post_packet(&client, b, &json!({"type": "packet", "proof": proof}))
    };
    submit(&client, a, "treasury", send(5));
    let (status, v) = deliver_next(5);
    assert_eq!((status, v["state"].as_str()), (200, Some("error_acknowledged")), "{v}");
    assert_eq!(v["acknowledgement"], json!({"result": "error", "error": "frozen_channel"}));
    let (status, v) = post_packet(
        &client,
        a,
        &json!({"type": "acknowledgement", "packet": id(5), "proof": ack(5)}),
    );
    assert_eq!((status, v["state"].as_str()), (200, Some("refunded")), "{v}");
    assert_eq!(
        amount(&client, a, json!({"type": "balance", "asset": "EUR", "account": "alice"})),
        690
    );
    assert_eq!(conservation(&client, &cities, 1000), 0);
    // Only an operator of B lifts the freeze; then packets from A are received again.
    let operator = dir.path().join("berlin-operator.token");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(["tokens", "issue", "--service", "ops", "--operator", "--file"])
        .arg(dir.path().join(bn).join("tokens.json"))
        .arg("--out")
        .arg(&operator)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unfreeze =
        |token: &str| client.delete(format!("{channel}/freeze")).bearer_auth(token).send().unwrap();
    assert_eq!(unfreeze(b["service_tokens"]["treasury"].as_str().unwrap()).status().as_u16(), 403);
    let r = unfreeze(std::fs::read_to_string(&operator).unwrap().trim());
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["frozen"], false);
    submit(&client, a, "treasury", send(7));
    let (status, v) = deliver_next(6);
    assert_eq!((status, v["state"].as_str()), (200, Some("received")), "{v}");
    assert!(sigterm(child).success());
}

#[test]
fn a_credential_revoked_in_one_city_is_reported_revoked_by_another_within_one_beacon_block() {
    let (_dir, child, m) = running_devnet(&["--no-bridges"]);
    let cities = m["cities"].as_array().unwrap().clone();
    let client = Client::new();
    let (a, b) = (&cities[0], &cities[1]);
    let an = a["name"].as_str().unwrap();
    let credential = "55".repeat(32);
    let key = urbis_core::state::StateKey::Revocation {
        credential_id: urbis_core::hash::Hash32::from_hex(&credential).unwrap(),
    };
    submit(
        &client,
        a,
        "hr-bureau",
        json!({"kind": "talent", "subject": "66".repeat(32), "payload": {"action": "issue", "credential_id": credential, "document": {"licence": "surveyor"}}}),
    );
    // B's verifier checks A's final non-revocation proof against B's own light client.
    let ask = |proof: &Value| {
        let r = client
            .post(format!("{}/v1/credentials/status", b["shard_api"].as_str().unwrap()))
            .json(&json!({"issuer": an, "credential_id": credential, "proof": proof}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let before = final_fact(&client, a, &key);
    let (status, v) = ask(&before);
    assert_eq!((status, v["status"].as_str()), (200, Some("valid")), "{v}");
    // A proof of another key, or a committed-level one, is refused.
    let mut committed = before.clone();
    committed["finality"] = Value::Null;
    refused(ask(&committed), 422, "invalid-proof", "not final", "committed-level proof");
    let revoke = submit(
        &client,
        a,
        "hr-bureau",
        json!({"kind": "talent", "subject": "66".repeat(32), "payload": {"action": "revoke", "credential_id": credential, "reason_code": 3}}),
    );
    let revoked_at = revoke["height"].as_u64().unwrap();
    // B is asked again and again from the moment of the revocation.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_revoked = loop {
        let (status, v) = ask(&final_fact(&client, a, &key));
        assert_eq!(status, 200, "{v}");
        if v["status"] == "revoked" {
            break v;
        }
        assert!(Instant::now() < deadline, "never reported revoked");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(first_revoked["revoked_at_height"].as_u64(), Some(revoked_at));
    // The beacon block that covers the revocation record.
    let record = crate::devnet::wait_final(
        &client,
        a["shard_api"].as_str().unwrap(),
        revoke["id"].as_str().unwrap(),
    );
    let covered = record["proof"]["finality"]["beacon_header"]["height"].as_u64().unwrap();
    let reported = first_revoked["beacon_height"].as_u64().unwrap();
    assert!(
        reported <= covered + 1,
        "covered at beacon height {covered}, first reported revoked through block {reported}"
    );
    // The old non-revocation proof cannot hide the revocation for long: it goes stale.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, v) = ask(&before);
        if status == 422 {
            refused((status, v), 422, "stale-proof", "fresh", "stale non-revocation proof");
            break;
        }
        assert_eq!(v["status"], "valid");
        assert!(Instant::now() < deadline, "an old non-revocation proof never went stale");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(sigterm(child).success());
}

#[test]
fn an_erasure_that_overtakes_its_packet_leaves_no_copy_at_the_destination() {
    // No bridges: this test is the relay, and it holds a credit packet back until after its
    // payload was erased at the source and the erasure reached the destination.
    let (dir, _child, m) = running_devnet(&["--no-bridges"]);
    let cities = m["cities"].as_array().unwrap().clone();
    let client = Client::new();
    let (a, b) = (&cities[0], &cities[1]);
    let (an, bn) = (a["name"].as_str().unwrap(), b["name"].as_str().unwrap());
    let marker = "OVERTAKEN-CREDIT-MARKER-7c2a";
    let sent = submit(
        &client,
        a,
        "credit-bureau",
        json!({"kind": "credit", "subject": "55".repeat(32), "to_city": bn, "payload": {"report": {"note": marker}}}),
    );
    let (id, sequence) = (sent["id"].as_str().unwrap(), sent["sequence"].as_u64().unwrap());
    // The packet as a relay reads it once final, payload beside it.
    let url = format!("{}/v1/packets/outbound?destination={bn}", a["shard_api"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let page: Value = client.get(&url).send().unwrap().json().unwrap();
        if let Some(p) = page["packets"].as_array().and_then(|p| p.first()) {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "the packet never became final: {page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(held["sequence"].as_u64(), Some(sequence));
    assert!(held["payload"].is_object(), "{held}");
    // Erased at the source, and the final proof of that handed to the destination first: it
    // holds no copy yet.
    let r = client
        .delete(format!("{}/v1/records/{id}/payload", a["shard_api"].as_str().unwrap()))
        .bearer_auth(a["service_tokens"]["credit-bureau"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let record_id = urbis_core::hash::Hash32::from_hex(id).unwrap();
    let key = urbis_core::state::StateKey::Erasure { record_id };
    let proof = final_fact_where(&client, a, &key, |v| v["present"] == true);
    let r = client
        .post(format!("{}/v1/packets/erasures", b["shard_api"].as_str().unwrap()))
        .json(&json!({"source": an, "record_id": id, "proof": proof}))
        .send()
        .unwrap();
    let (status, answer) = (r.status().as_u16(), r.json::<Value>().unwrap());
    assert_eq!((status, &answer["erased"]), (200, &json!(false)), "no copy is held yet: {answer}");
    // Then the held-back packet with its payload: received, but the payload is not kept.
    let (status, answer) = post_packet(
        &client,
        b,
        &json!({"type": "packet", "proof": held["proof"], "payload": held["payload"]}),
    );
    assert_eq!((status, answer["state"].as_str()), (200, Some("received")), "{answer}");
    let r = client
        .get(format!(
            "{}/v1/packets/{an}/{bn}/{sequence}/payload",
            b["shard_api"].as_str().unwrap()
        ))
        .bearer_auth(b["service_tokens"]["credit-bureau"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 410, "B kept a payload erased at its source");
    // B's files never held it.
    let hits = crate::shard::files_containing(&dir.path().join(bn), marker.as_bytes());
    assert!(hits.is_empty(), "B's files hold the erased report: {hits:?}");
}

/// The source's own index of the packets it sent (its store's `outbound` column family,
/// written in the block's one synced batch) is what settling and the outbound pages read.
/// A sequence below the channel's next one with no entry there means a damaged store: the
/// source answers an internal error (a problem document, status 500) for it, never "settled"
/// or "no such packet", so no bridge stops relaying a packet that was never settled.
#[test]
fn a_sent_packet_missing_from_the_source_index_is_an_internal_error_not_a_settled_one() {
    let (dir, child, m) = running_devnet(&["--no-bridges"]);
    let cities = m["cities"].as_array().unwrap().clone();
    let client = Client::new();
    let (a, b) = (&cities[0], &cities[1]);
    let (an, bn) = (a["name"].as_str().unwrap(), b["name"].as_str().unwrap());
    let api = a["shard_api"].as_str().unwrap().to_string();
    let record = json!({"kind": "information", "subject": "55".repeat(32), "to_city": bn, "payload": {"dataset": "index", "media_type": "application/json", "content": {"n": 1}}});
    let sent = submit(&client, a, "open-data-office", record);
    let sequence = sent["sequence"].as_u64().unwrap();
    let status_url = format!("{api}/v1/packets/{an}/{bn}/{sequence}");
    let page_url = format!("{api}/v1/packets/outbound?destination={bn}&after=0");
    // With no bridge the packet stays unsettled: listed on the page once final.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: Value = client.get(&page_url).send().unwrap().json().unwrap();
        if page["packets"].as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the packet was never listed final: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status: Value = client.get(&status_url).send().unwrap().json().unwrap();
    assert_eq!(status["state"], "sent", "{status}");
    let port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    assert!(sigterm(child).success());

    let genesis =
        urbis_shard::node::load_genesis(std::path::Path::new(m["genesis"].as_str().unwrap()))
            .unwrap();
    let (source, destination) =
        (genesis.city_by_name(an).unwrap().id, genesis.city_by_name(bn).unwrap().id);
    // The entry is lost (destination id u32 and sequence u64, big-endian).
    let db_path = dir.path().join(an).join("db");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db_path).unwrap();
    assert!(cfs.iter().any(|c| c == "outbound"), "{cfs:?}");
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db_path, &cfs).unwrap();
        let cf = db.cf_handle("outbound").unwrap();
        let mut key = destination.0.to_be_bytes().to_vec();
        key.extend_from_slice(&sequence.to_be_bytes());
        assert!(db.get_cf(&cf, &key).unwrap().is_some(), "the index holds the packet");
        db.delete_cf(&cf, &key).unwrap();
        db.flush_cf(&cf).unwrap();
    }

    let log = dir.path().join("after.log");
    let devnet =
        crate::devnet::start_logged(dir.path(), port, &["--no-bridges"], &[], Some(log.as_path()));
    crate::devnet::wait_ready(std::slice::from_ref(&api));
    for url in [&status_url, &page_url] {
        let r = client.get(url).send().unwrap();
        assert_eq!(r.status().as_u16(), 500, "{url}");
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(kind, "application/problem+json", "{url}");
        // The client learns only that it is internal; the operator's log says what.
        let problem: Value = r.json().unwrap();
        assert_eq!(problem["status"], 500, "{url}: {problem}");
        assert!(problem["type"].as_str().unwrap().ends_with("/internal"), "{url}: {problem}");
    }
    assert!(sigterm(devnet).success());
    let logged = std::fs::read_to_string(&log).unwrap();
    let missing =
        format!("packet {source}/{destination}/{sequence} was sent but is missing from the index");
    assert!(logged.contains(&missing), "the log names the damage:\n{logged}");
}
