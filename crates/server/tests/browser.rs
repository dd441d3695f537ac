//! The web client in a real browser: the server runs with its HTTP endpoints on port 0,
//! this test starts chromedriver on a free port and drives headless Chromium through
//! WebDriver (`fantoccini`), while another user talks to the page over TCP.
//!
//! The flow: register and log in in the page; a TCP user's message appears in the
//! conversation list and in the conversation (as text: markup in it stays text); the
//! page's message reaches the TCP user; the TCP user's read mark shows as "Seen"; a
//! reload keeps the login (the token in localStorage).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (or `CHROMIUM` and
//! `CHROMEDRIVER`). Without them it prints why and passes, unless
//! `CHATD_TEST_REQUIRE_SERVICES=1` (as CI sets), which makes it fail.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "server/util.rs"]
mod util;

use std::net::TcpListener as StdListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};
use util::{StoreKind, TestServer, PASSWORD};

const STORE: StoreKind = StoreKind::Sqlite;

/// The longest the test waits for the page to reach a state.
const DEADLINE: Duration = Duration::from_secs(20);

/// Chromedriver, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Starts chromedriver on a free port and waits until it accepts connections.
async fn start_driver(path: &PathBuf) -> Driver {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let deadline = Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

async fn browser(driver: &Driver, chromium: &PathBuf, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// Evaluates `expr` in the page until it is truthy; returns its value. Fails the test,
/// with `what`, after [`DEADLINE`].
async fn wait_until(page: &Client, what: &str, expr: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
    loop {
        let value = page.execute(&script, vec![]).await.expect("execute script");
        let truthy = match &value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return value;
        }
        if Instant::now() > deadline {
            let shown = page
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            panic!("the page never showed {what}; it shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_web_client_chats_with_a_tcp_user() {
    let chromium = tool("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    if !chromium.exists() || !chromedriver.exists() {
        let why = format!(
            "needs {} and {} (apt-get install chromium chromium-driver)",
            chromium.display(),
            chromedriver.display()
        );
        if std::env::var("CHATD_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("browser test: {why}");
        }
        println!("browser test skipped: {why}");
        return;
    }

    let server = TestServer::start_with_http().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let driver = start_driver(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, &chromium, profile.path()).await;
    // Close the browser even when a check fails, so that no Chromium outlives the test.
    let outcome = AssertUnwindSafe(flow(&server, &page, &mut bob, bob_id))
        .catch_unwind()
        .await;
    let _ = page.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn flow(server: &TestServer, page: &Client, bob: &mut util::Conn, bob_id: i64) {
    let base = format!("http://{}", server.http_addr());
    page.goto(&format!("{base}/")).await.unwrap();

    // Register and log in in the page.
    page.find(Locator::Id("auth-name"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    page.find(Locator::Id("auth-password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    page.find(Locator::Id("register-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let alice_id = wait_until(
        page,
        "alice logged in",
        "document.getElementById('me').dataset.id",
    )
    .await
    .as_str()
    .and_then(|id| id.parse::<i64>().ok())
    .expect("alice's id in the page");
    wait_until(
        page,
        "the connection online",
        "document.getElementById('conn-state').dataset.state === 'online'",
    )
    .await;

    // Bob's message, with markup that must stay text, shows in the list, then opened.
    let hostile = "hello alice <img src=x onerror=\"window.owned=1\"><b>bold?</b>";
    bob.send_msg(alice_id, hostile).await;
    let item = format!("#conv-list button[data-key='u{bob_id}']");
    wait_until(
        page,
        "bob's conversation in the list with his message",
        &format!("document.querySelector(\"{item}\").textContent.includes('hello alice')"),
    )
    .await;
    page.find(Locator::Css(&item))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = wait_until(
        page,
        "bob's message in the conversation",
        "[...document.querySelectorAll('#messages .text')].map(n => n.textContent).join('\\n')",
    )
    .await;
    assert_eq!(shown, json!(hostile), "the text is shown as sent");
    let injected = page
        .execute(
            "return document.querySelectorAll('#messages img, #messages b').length + (window.owned ? 100 : 0)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0), "markup from a message became markup");

    // The page's message reaches bob.
    page.find(Locator::Id("composer-text"))
        .await
        .unwrap()
        .send_keys("hi bob, from the browser")
        .await
        .unwrap();
    page.find(Locator::Id("send-btn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let msg = bob.next_msg().await;
    assert_eq!(msg["text"], "hi bob, from the browser");
    assert_eq!(msg["from"], alice_id);
    wait_until(
        page,
        "the message marked sent",
        "[...document.querySelectorAll('#messages .mine .status')].some(n => n.textContent === 'Sent')",
    )
    .await;

    // Bob reads it: the page shows it seen.
    bob.ok(json!({"op": "read", "conv": msg["conv"], "seq": msg["seq"]}))
        .await;
    wait_until(
        page,
        "the message marked seen",
        "[...document.querySelectorAll('#messages .mine .status')].some(n => n.textContent === 'Seen')",
    )
    .await;

    // A reload keeps the login and the conversation.
    page.refresh().await.unwrap();
    wait_until(
        page,
        "alice still logged in after a reload",
        &format!("document.getElementById('me').dataset.id === '{alice_id}'"),
    )
    .await;
    wait_until(
        page,
        "the conversation with bob after a reload",
        &format!(
            "document.querySelector(\"{item}\").textContent.includes('hi bob, from the browser')"
        ),
    )
    .await;

    // A message sent while the page is logged in arrives live, unread in the list.
    bob.send_msg(alice_id, "are you still there?").await;
    wait_until(
        page,
        "bob's live message with an unread count",
        &format!(
            "document.querySelector(\"{item} .badge\") && document.querySelector(\"{item}\").textContent.includes('still there')"
        ),
    )
    .await;

    // A picture of the page as a person sees it, kept with the test run.
    page.find(Locator::Css(&item))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        page,
        "the conversation open again",
        "[...document.querySelectorAll('#messages .text')].some(n => n.textContent.includes('still there'))",
    )
    .await;
    let png = page.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-client.png");
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}
