//! Conversations: the upstream receives the system prompt, the earlier turns and the new prompt
//! (trimmed to the model's context window, newest kept), one turn runs at a time, a user sees
//! only their own conversations, archiving removes nothing, and the turns table is append-only.
//! The local upstream reports what it was sent (`@@record=ID`).

use std::sync::atomic::Ordering;

use entity::prelude::*;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestApp, TestUser, assert_books_balance, error_code, spawn_app, spawn_app_with_env};

use crate::completions::{COMPLETE, STREAM};

const CREATE: &str = "mutation($i: CreateConversationInput!) { createConversation(input: $i) { id title model systemPrompt archived turnCount createdAt updatedAt } }";
const UPDATE: &str = "mutation($i: UpdateConversationInput!) { updateConversation(input: $i) { id title model systemPrompt archived turnCount updatedAt } }";
const GET: &str = "query($id: ID!) { conversation(id: $id) { id title model turnCount archived lastTurn { id prompt } turns(first: 100) { edges { cursor node { id prompt completion status conversation { id } } } pageInfo { hasNextPage hasPreviousPage } } } }";
const LIST: &str = "query($first: Int, $after: String, $last: Int, $before: String, $archived: Boolean) { conversations(first: $first, after: $after, last: $last, before: $before, archived: $archived) { edges { cursor node { id title } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

async fn create(app: &TestApp, user: &TestUser, input: Value) -> Value {
    let body = app
        .gql(Some(&user.token), CREATE, json!({ "i": input }))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["createConversation"].clone()
}

/// One turn through `complete`: the finalised log (or the error body).
async fn turn(app: &TestApp, user: &TestUser, conversation: &str, prompt: &str) -> Value {
    app.gql(
        Some(&user.token),
        COMPLETE,
        json!({ "i": { "prompt": prompt, "conversationId": conversation } }),
    )
    .await
}

fn ok_turn(body: &Value) -> &Value {
    assert!(body["errors"].is_null(), "{body}");
    &body["data"]["complete"]
}

fn pairs(messages: &[(String, String)]) -> Vec<(&str, &str)> {
    messages
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect()
}

#[tokio::test]
async fn the_upstream_receives_the_system_prompt_and_the_earlier_turns() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let c = create(&app, &ada, json!({ "systemPrompt": "You are terse." })).await;
    let id = c["id"].as_str().unwrap();
    assert!(c["title"].is_null() && c["turnCount"] == 0, "{c}");

    let one = turn(&app, &ada, id, "Plan a trip to Kyoto @@tokens=5").await;
    let one = ok_turn(&one).clone();
    // A turn that fails before any output is kept in the conversation but never sent again.
    let failed = turn(&app, &ada, id, "this one fails @@fail=500").await;
    assert_eq!(error_code(&failed), Some("UPSTREAM_ERROR"), "{failed}");
    let two = turn(&app, &ada, id, "And Osaka? @@tokens=6").await;
    let two = ok_turn(&two).clone();
    let three = turn(&app, &ada, id, "Which first? @@tokens=4 @@record=three").await;
    let three = ok_turn(&three).clone();

    let sent = app.upstream.stats.take_received("three").expect("recorded");
    let c1 = one["completion"].as_str().unwrap();
    let c2 = two["completion"].as_str().unwrap();
    assert_eq!(
        pairs(&sent.messages),
        [
            ("system", "You are terse."),
            ("user", "Plan a trip to Kyoto @@tokens=5"),
            ("assistant", c1),
            ("user", "And Osaka? @@tokens=6"),
            ("assistant", c2),
            ("user", "Which first? @@tokens=4 @@record=three"),
        ]
    );
    assert_eq!(sent.model, "gpt-4o-mini");
    // What was sent is what is metered: the whole context, counted with the model's tokenizer.
    let expected = tokenizer::count_chat("gpt-4o-mini", pairs(&sent.messages)) as i64;
    assert_eq!(three["promptTokens"], expected, "{three}");
    assert_eq!(three["metadata"]["context_turns"], 2, "{three}");
    assert_eq!(three["metadata"]["conversation_id"], id, "{three}");

    let got = app.gql(Some(&ada.token), GET, json!({ "id": id })).await;
    let conversation = &got["data"]["conversation"];
    assert_eq!(conversation["title"], "Plan a trip to Kyoto @@tokens=5");
    assert_eq!(conversation["turnCount"], 4);
    assert_eq!(conversation["lastTurn"]["id"], three["id"]);
    let turns = conversation["turns"]["edges"].as_array().unwrap();
    let prompts: Vec<&str> = turns
        .iter()
        .map(|e| e["node"]["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(
        prompts,
        [
            "Plan a trip to Kyoto @@tokens=5",
            "this one fails @@fail=500",
            "And Osaka? @@tokens=6",
            "Which first? @@tokens=4 @@record=three"
        ]
    );
    assert_eq!(turns[1]["node"]["status"], "ERROR");
    assert!(turns.iter().all(|e| e["node"]["conversation"]["id"] == id));
    // Every turn is one upstream call with one log and one usage row.
    assert_books_balance(&app, &ada.id, 4).await;
    app.shutdown().await;
}

#[tokio::test]
async fn turns_page_oldest_first_in_both_directions() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let c = create(&app, &ada, json!({ "title": "Paging" })).await;
    let id = c["id"].as_str().unwrap();
    for i in 1..=5 {
        ok_turn(&turn(&app, &ada, id, &format!("turn {i} @@tokens=1")).await);
    }
    let q = "query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) { conversation(id: $id) { turns(first: $first, after: $after, last: $last, before: $before) { edges { cursor node { prompt } } pageInfo { hasNextPage hasPreviousPage } } } }";
    let page = |vars: Value| {
        let app = &app;
        let token = ada.token.clone();
        async move {
            let body = app.gql(Some(&token), q, vars).await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["conversation"]["turns"].clone()
        }
    };
    let prompts = |t: &Value| -> Vec<String> {
        t["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["node"]["prompt"]
                    .as_str()
                    .unwrap()
                    .replace(" @@tokens=1", "")
            })
            .collect()
    };
    let first = page(json!({ "id": id, "first": 2 })).await;
    assert_eq!(prompts(&first), ["turn 1", "turn 2"]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], false);
    let after = first["edges"][1]["cursor"].as_str().unwrap();
    let second = page(json!({ "id": id, "first": 2, "after": after })).await;
    assert_eq!(prompts(&second), ["turn 3", "turn 4"]);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], true);
    let last = page(json!({ "id": id, "last": 2 })).await;
    assert_eq!(prompts(&last), ["turn 4", "turn 5"]);
    assert_eq!(last["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(last["pageInfo"]["hasNextPage"], false);
    let before = last["edges"][0]["cursor"].as_str().unwrap();
    let back = page(json!({ "id": id, "last": 3, "before": before })).await;
    assert_eq!(prompts(&back), ["turn 1", "turn 2", "turn 3"]);
    assert_eq!(back["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(back["pageInfo"]["hasNextPage"], true);
    // A cursor of another conversation is refused.
    let other = create(&app, &ada, json!({})).await;
    let body = app
        .gql(
            Some(&ada.token),
            q,
            json!({ "id": other["id"], "first": 2, "after": after }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    app.shutdown().await;
}

/// The turns a window of `window` tokens keeps for `prompt`, with `max_tokens` of room, as an
/// independent count: newest first, each whole turn while it fits.
fn expected_kept(
    model: &str,
    window: usize,
    max_tokens: usize,
    turns: &[(String, String)],
    prompt: &str,
) -> usize {
    let mut used = tokenizer::count_chat(model, [("user", prompt)]);
    let mut kept = 0;
    for (p, c) in turns.iter().rev() {
        let cost = tokenizer::count_chat(model, [("user", p.as_str()), ("assistant", c.as_str())])
            - tokenizer::count_chat(model, std::iter::empty::<(&str, &str)>());
        if used + cost > window - max_tokens {
            break;
        }
        used += cost;
        kept += 1;
    }
    kept
}

#[tokio::test]
async fn the_context_is_trimmed_to_the_window_oldest_turns_first() {
    const WINDOW: usize = 260;
    let prices = format!(
        r#"{{"gpt-4o-mini": {{"input": 15000000, "output": 60000000, "context_window": {WINDOW}}}}}"#
    );
    let app = spawn_app_with_env(&[("MODEL_PRICES", &prices)]).await;
    let ada = app.sign_up("ada@example.com").await;
    let c = create(&app, &ada, json!({})).await;
    let id = c["id"].as_str().unwrap();
    let mut done = Vec::new();
    for i in 1..=8 {
        let prompt = format!("question number {i} @@tokens=20");
        let body = app
            .gql(
                Some(&ada.token),
                COMPLETE,
                json!({ "i": { "prompt": prompt, "conversationId": id, "maxTokens": 30 } }),
            )
            .await;
        let log = ok_turn(&body);
        done.push((prompt, log["completion"].as_str().unwrap().to_owned()));
    }
    let prompt = "the last one @@tokens=3 @@record=last";
    let body = app
        .gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": prompt, "conversationId": id, "maxTokens": 30 } }),
        )
        .await;
    let log = ok_turn(&body).clone();
    let sent = app.upstream.stats.take_received("last").unwrap();
    let kept = expected_kept("gpt-4o-mini", WINDOW, 30, &done, prompt);
    assert!(
        (1..8).contains(&kept),
        "the window must drop some turns and keep some: {kept}"
    );
    assert_eq!(log["metadata"]["context_turns"], kept, "{log}");
    // Exactly the newest `kept` turns, in order, then the prompt.
    let mut expected = Vec::new();
    for (p, c) in &done[done.len() - kept..] {
        expected.push(("user", p.as_str()));
        expected.push(("assistant", c.as_str()));
    }
    expected.push(("user", prompt));
    assert_eq!(pairs(&sent.messages), expected);
    let counted = tokenizer::count_chat("gpt-4o-mini", expected.clone()) as i64;
    assert_eq!(log["promptTokens"], counted);
    assert!(counted as usize + 30 <= WINDOW);

    // A prompt that cannot fit with its maxTokens is refused before anything is written.
    let logs_before = PromptLogs::find().count(&app.db).await.unwrap();
    let requests = app.upstream.stats.requests.load(Ordering::SeqCst);
    let long = "word ".repeat(300);
    let body = app
        .gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": long, "conversationId": id, "maxTokens": 30 } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert_eq!(
        PromptLogs::find().count(&app.db).await.unwrap(),
        logs_before
    );
    assert_eq!(app.upstream.stats.requests.load(Ordering::SeqCst), requests);
    app.shutdown().await;
}

#[tokio::test]
async fn one_turn_at_a_time() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let c = create(&app, &ada, json!({})).await;
    let id = c["id"].as_str().unwrap();

    // A turn streaming: a second turn started meanwhile is refused, writing and sending nothing.
    let mut ws = GqlWs::connect(&app, Some(&ada.token)).await;
    ws.subscribe(
        "1",
        STREAM,
        json!({ "i": { "prompt": "slow @@tokens=6 @@pace_ms=100", "conversationId": id } }),
    )
    .await;
    let first = ws.next().await.expect("the first event");
    assert_eq!(first["type"], "next", "{first}");
    let logs = PromptLogs::find().count(&app.db).await.unwrap();
    let body = turn(&app, &ada, id, "meanwhile").await;
    assert_eq!(error_code(&body), Some("CONVERSATION_BUSY"), "{body}");
    assert_eq!(PromptLogs::find().count(&app.db).await.unwrap(), logs);
    assert_eq!(app.upstream.stats.requests.load(Ordering::SeqCst), 1);
    // Another conversation is not held up.
    let other = create(&app, &ada, json!({})).await;
    ok_turn(
        &turn(
            &app,
            &ada,
            other["id"].as_str().unwrap(),
            "elsewhere @@tokens=1",
        )
        .await,
    );
    let (rest, _) = ws.collect("1").await;
    assert!(rest.last().unwrap()["data"]["completionStream"]["done"] == true);
    ok_turn(&turn(&app, &ada, id, "now it is free @@tokens=1").await);

    // Two turns sent at once: exactly one runs.
    let (a, b) = tokio::join!(
        turn(&app, &ada, id, "racing a @@tokens=5 @@pace_ms=100"),
        turn(&app, &ada, id, "racing b @@tokens=5 @@pace_ms=100"),
    );
    let busy = [&a, &b]
        .iter()
        .filter(|r| error_code(r) == Some("CONVERSATION_BUSY"))
        .count();
    let ran = [&a, &b].iter().filter(|r| r["errors"].is_null()).count();
    assert_eq!((busy, ran), (1, 1), "{a}\n{b}");
    let got = app.gql(Some(&ada.token), GET, json!({ "id": id })).await;
    assert_eq!(got["data"]["conversation"]["turnCount"], 3, "{got}");
    assert_books_balance(&app, &ada.id, 4).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_sees_and_continues_only_their_own_conversations() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let c = create(&app, &ada, json!({ "title": "Ada's" })).await;
    let id = c["id"].as_str().unwrap();
    ok_turn(&turn(&app, &ada, id, "secret plans @@tokens=2").await);

    let got = app.gql(Some(&bob.token), GET, json!({ "id": id })).await;
    assert!(
        got["data"]["conversation"].is_null() && got["errors"].is_null(),
        "{got}"
    );
    let list = app.gql(Some(&bob.token), LIST, json!({})).await;
    assert_eq!(list["data"]["conversations"]["edges"], json!([]), "{list}");
    for bad in [
        id.to_owned(),
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
    ] {
        let body = turn(&app, &bob, &bad, "let me in").await;
        assert_eq!(error_code(&body), Some("NOT_FOUND"), "{body}");
        let body = app
            .gql(
                Some(&bob.token),
                UPDATE,
                json!({ "i": { "id": bad, "title": "mine now" } }),
            )
            .await;
        assert_eq!(error_code(&body), Some("NOT_FOUND"), "{body}");
    }
    // Ada's cursors are not Bob's.
    let adas = app.gql(Some(&ada.token), LIST, json!({ "first": 1 })).await;
    let cursor = adas["data"]["conversations"]["edges"][0]["cursor"].clone();
    let body = app
        .gql(
            Some(&bob.token),
            LIST,
            json!({ "first": 1, "after": cursor }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    // Signed out, nothing at all.
    let body = app.gql(None, LIST, json!({})).await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
    let got = app.gql(Some(&ada.token), GET, json!({ "id": id })).await;
    assert_eq!(got["data"]["conversation"]["title"], "Ada's");
    assert_eq!(got["data"]["conversation"]["turnCount"], 1);
    // Bob wrote nothing and sent nothing: Ada's turn is the only upstream call.
    assert_eq!(PromptLogs::find().count(&app.db).await.unwrap(), 1);
    assert_eq!(app.upstream.stats.requests.load(Ordering::SeqCst), 1);
    assert_books_balance(&app, &ada.id, 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_list_is_by_last_activity_and_archiving_removes_nothing() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let mut ids = Vec::new();
    for title in ["first", "second", "third"] {
        let c = create(&app, &ada, json!({ "title": title })).await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    let titles = |body: &Value| -> Vec<String> {
        body["data"]["conversations"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = app.gql(Some(&ada.token), LIST, json!({})).await;
    assert_eq!(titles(&list), ["third", "second", "first"]);
    // A turn is activity: "first" moves to the top.
    ok_turn(&turn(&app, &ada, &ids[0], "hello @@tokens=2").await);
    let list = app.gql(Some(&ada.token), LIST, json!({})).await;
    assert_eq!(titles(&list), ["first", "third", "second"]);
    let page = app.gql(Some(&ada.token), LIST, json!({ "first": 2 })).await;
    assert_eq!(titles(&page), ["first", "third"]);
    let end = page["data"]["conversations"]["pageInfo"]["endCursor"].clone();
    let next = app
        .gql(Some(&ada.token), LIST, json!({ "first": 2, "after": end }))
        .await;
    assert_eq!(titles(&next), ["second"]);
    assert_eq!(
        next["data"]["conversations"]["pageInfo"]["hasPreviousPage"],
        true
    );
    let back = app.gql(Some(&ada.token), LIST, json!({ "last": 2 })).await;
    assert_eq!(titles(&back), ["third", "second"]);

    let logs = PromptLogs::find().count(&app.db).await.unwrap();
    let body = app
        .gql(
            Some(&ada.token),
            UPDATE,
            json!({ "i": { "id": ids[0], "archived": true } }),
        )
        .await;
    assert_eq!(
        body["data"]["updateConversation"]["archived"], true,
        "{body}"
    );
    let list = app.gql(Some(&ada.token), LIST, json!({})).await;
    assert_eq!(titles(&list), ["third", "second"]);
    let archived = app
        .gql(Some(&ada.token), LIST, json!({ "archived": true }))
        .await;
    assert_eq!(titles(&archived), ["first"]);
    // Its turns and logs are all still there, and it can be continued.
    let got = app
        .gql(Some(&ada.token), GET, json!({ "id": ids[0] }))
        .await;
    assert_eq!(
        got["data"]["conversation"]["turns"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(PromptLogs::find().count(&app.db).await.unwrap(), logs);
    assert_eq!(ConversationTurns::find().count(&app.db).await.unwrap(), 1);
    ok_turn(&turn(&app, &ada, &ids[0], "still here @@tokens=1").await);
    app.shutdown().await;
}

#[tokio::test]
async fn settings_are_checked_and_a_model_change_applies_from_the_next_turn() {
    let app =
        spawn_app_with_env(&[("MAX_PROMPT_CHARS", "100"), ("USER_MAX_CONVERSATIONS", "3")]).await;
    let ada = app.sign_up("ada@example.com").await;
    for bad in [
        json!({ "title": "t".repeat(201) }),
        json!({ "title": "a\u{0}b" }),
        json!({ "model": "gpt-nonexistent" }),
        json!({ "systemPrompt": "s".repeat(101) }),
    ] {
        let body = app.gql(Some(&ada.token), CREATE, json!({ "i": bad })).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    }
    assert_eq!(Conversations::find().count(&app.db).await.unwrap(), 0);

    let c = create(&app, &ada, json!({ "systemPrompt": "Be kind." })).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["model"], "gpt-4o-mini", "the profile's default model");
    ok_turn(&turn(&app, &ada, id, "one @@tokens=2 @@record=a").await);
    assert_eq!(
        app.upstream.stats.take_received("a").unwrap().model,
        "gpt-4o-mini"
    );
    let body = app
        .gql(
            Some(&ada.token),
            UPDATE,
            json!({ "i": { "id": id, "model": "gpt-4o", "systemPrompt": null, "title": "Renamed" } }),
        )
        .await;
    let updated = &body["data"]["updateConversation"];
    assert_eq!(updated["model"], "gpt-4o", "{body}");
    assert!(updated["systemPrompt"].is_null());
    assert_eq!(updated["title"], "Renamed");
    let body = app
        .gql(
            Some(&ada.token),
            UPDATE,
            json!({ "i": { "id": id, "model": "nope" } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    let two = turn(&app, &ada, id, "two @@tokens=2 @@record=b").await;
    let sent = app.upstream.stats.take_received("b").unwrap();
    assert_eq!(sent.model, "gpt-4o");
    assert_eq!(
        sent.messages[0].0, "user",
        "the cleared system prompt is not sent"
    );
    assert_eq!(sent.messages.len(), 3);
    assert_eq!(
        ok_turn(&two)["promptTokens"],
        tokenizer::count_chat("gpt-4o", pairs(&sent.messages)) as i64
    );

    // The per-user cap on conversations.
    create(&app, &ada, json!({})).await;
    create(&app, &ada, json!({})).await;
    let body = app.gql(Some(&ada.token), CREATE, json!({ "i": {} })).await;
    assert_eq!(error_code(&body), Some("QUOTA_EXCEEDED"), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_page_of_conversations_with_their_last_turn_is_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    for i in 0..12 {
        let c = create(&app, &ada, json!({ "title": format!("c{i}") })).await;
        ok_turn(&turn(&app, &ada, c["id"].as_str().unwrap(), "hi @@tokens=1").await);
    }
    let q = "query($n: Int) { conversations(first: $n) { edges { node { id title lastTurn { id prompt completion costMicrocents conversation { id } } } } } history(first: $n) { edges { node { id conversation { id title } } } } }";
    let statements = app.statements();
    let mut counts = Vec::new();
    for n in [1, 12] {
        let before = statements.load(Ordering::SeqCst);
        let body = app.gql(Some(&ada.token), q, json!({ "n": n })).await;
        let edges = body["data"]["conversations"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n as usize, "{body}");
        assert!(
            edges
                .iter()
                .all(|e| e["node"]["lastTurn"]["conversation"]["id"] == e["node"]["id"])
        );
        counts.push(statements.load(Ordering::SeqCst) - before);
    }
    assert!(
        counts[1] <= counts[0] + 2,
        "statements must not grow with the page: {counts:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn turns_are_append_only_in_the_database() {
    let app = tests::spawn_app_as_owner().await;
    let ada = app.sign_up("ada@example.com").await;
    let c = create(&app, &ada, json!({})).await;
    let id = c["id"].as_str().unwrap();
    ok_turn(&turn(&app, &ada, id, "keep me @@tokens=1").await);
    assert!(
        app.exec("UPDATE conversation_turns SET seq = seq + 1")
            .await
            .is_err()
    );
    assert!(app.exec("DELETE FROM conversation_turns").await.is_err());
    // A conversation with turns cannot be deleted from under them either.
    assert!(app.exec("DELETE FROM conversations").await.is_err());
    assert_eq!(ConversationTurns::find().count(&app.db).await.unwrap(), 1);
    // Deleting the user takes everything with them.
    app.exec(&format!("DELETE FROM \"user\" WHERE id = '{}'", ada.id))
        .await
        .unwrap();
    assert_eq!(ConversationTurns::find().count(&app.db).await.unwrap(), 0);
    assert_eq!(Conversations::find().count(&app.db).await.unwrap(), 0);
    app.shutdown().await;
}
