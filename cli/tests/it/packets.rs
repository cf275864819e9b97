//! Cross-city exchange on a running devnet: records sent from one city are accepted in
//! another through the bridges, each acceptance proven at level final and checked offline by
//! `urbis verify --genesis`; a capital transfer and its return trip conserve value.

use crate::devnet::{
    beacon_heights, free_run_of_three_ports, manifest, sigterm, start, verify_offline, wait_ready,
};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn submit(client: &Client, city: &Value, service: &str, record: Value) -> Value {
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
fn wait_packet(
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

#[test]
fn records_sent_from_one_city_are_accepted_in_another_with_offline_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_run_of_three_ports();
    let child = start(dir.path(), port);
    let m = manifest(dir.path());
    let cities = m["cities"].as_array().unwrap().clone();
    let urls: Vec<String> =
        cities.iter().map(|c| c["shard_api"].as_str().unwrap().to_string()).collect();
    wait_ready(&urls);
    let client = Client::new();
    let validators: Vec<String> = m["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["beacon_api"].as_str().unwrap().to_string())
        .collect();
    beacon_heights(&client, &validators, 2);
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
            json!({"kind": "credit", "subject": subject, "to_city": bn, "payload": {"report": {"score": 710}}}),
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
        std::fs::write(&out, serde_json::to_vec(&at_b["proof"]).unwrap()).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_urbis"))
            .arg("verify")
            .arg(&out)
            .arg("--genesis")
            .arg(m["genesis"].as_str().unwrap())
            .args(["--key", &key.to_string(), "--city", bn])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        let verified: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(verified["level"], "final", "{verified}");
        // The receipt names the record that was sent.
        let receipt_value = at_b["proof"]["value"].as_str().unwrap();
        let id: urbis_core::hash::Hash32 =
            urbis_core::encoding::decode(&hex::decode(receipt_value).unwrap()).unwrap();
        assert_eq!(id.to_hex(), r["id"].as_str().unwrap());
        // And the source holds the acknowledgement: settled exactly once.
        wait_packet(&client, a, &path, "acknowledged in A", |v| v["state"] == "acknowledged");
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
    assert!(sigterm(child).success());
}
