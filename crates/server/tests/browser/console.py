"""Drives the web console in headless Chromium (Selenium + chromedriver), as people would.

Called by crates/server/tests/browser.rs. The whole set-up happens in the browser: the admin
creates a model with two price tiers, a provider with an endpoint (pointing at the mock
upstream), an upstream key and the provider's model, and a user; the user signs in, creates a
key (shown once) and a request goes through the gateway with it; both find that request on the
usage pages with its cost breakdown and attempt trace; the admin turns the provider off and
routing changes. Every navigation page must render; a normal user must not open admin pages.
Prints one line per step and exits non-zero at the first failure. Screenshots of the main pages
go to --shots when given (the README shows them).
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--mock-url", required=True)
p.add_argument("--admin-email", required=True)
p.add_argument("--admin-password", required=True)
p.add_argument("--shots", default="")
p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
args = p.parse_args()

opts = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
          "--window-size=1366,900", "--no-first-run", "--disable-extensions"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
driver.set_page_load_timeout(30)
step_no = 0
USER, USER_PW = "browser-user@example.com", "browser-password-1"
UPSTREAM_SECRET = "sk-browser-upstream-0123456789"


def step(msg):
    global step_no
    step_no += 1
    print(f"[{step_no}] {msg}", flush=True)


def fail(msg):
    print(f"FAIL: {msg}\nURL: {driver.current_url}\n{driver.page_source[:3000]}", flush=True)
    driver.quit()
    sys.exit(1)


def go(path):
    driver.get(args.url + path)


def body():
    return driver.page_source


def shot(name):
    if args.shots:
        driver.save_screenshot(f"{args.shots}/{name}.png")


def submit(button):
    """Clicks a submit button and waits for the page it leads to.

    The old page is marked with a window property; the wait ends when a fully loaded document
    without the mark is there. (Waiting for the old <html> element to go stale is not reliable:
    while the navigation is under way chromedriver may answer "Node with given id does not
    belong to the document" instead of "stale element", which Selenium's staleness_of does not
    treat as stale.) Errors raised while the page is being replaced are retried until the time-out.
    """
    driver.execute_script("window.__aetherOldPage = true;")
    button.click()
    WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && !window.__aetherOldPage;"))


def drawer(form_selector="details.drawer form"):
    """Opens the page's (first matching) drawer and returns its form."""
    form = driver.find_element(By.CSS_SELECTOR, form_selector)
    details = form.find_element(By.XPATH, "./ancestor::details")
    if not details.get_attribute("open"):
        details.find_element(By.TAG_NAME, "summary").click()
    return form


def fill(form, values):
    for name, value in values.items():
        el = form.find_element(By.NAME, name)
        if el.tag_name == "select":
            Select(el).select_by_visible_text(value)
        else:
            el.clear()
            el.send_keys(value)


def login(email, password):
    go("/login")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    submit(driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def logout():
    submit(driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button"))


def rendered_ok():
    src = body()
    return "could not be rendered" not in src and "<h1>" in src


def ask(key):
    """A request through the gateway, as a client would send it."""
    req = urllib.request.Request(
        args.url + "/v1/messages", method="POST",
        data=json.dumps({"model": "browser-model", "max_tokens": 64,
                         "messages": [{"role": "user", "content": "Hello from the browser test"}]}).encode(),
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("x-aether-request-id")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-aether-request-id")


def find_request(path):
    """Opens a request's detail page, waiting for the usage writer to record it."""
    for _ in range(40):
        go(path)
        if "Cost breakdown" in body():
            return
        time.sleep(0.25)
    fail(f"{path} never showed the request")


try:
    step("the console asks for a sign-in; a wrong password is refused")
    go("/admin")
    if "/login" not in driver.current_url:
        fail("an anonymous visitor was not sent to the sign-in page")
    shot("login")
    login(args.admin_email, "not-the-password")
    if "/login" not in driver.current_url or "alert" not in body():
        fail("a wrong password did not show an error")

    step("the admin signs in and lands on the dashboard")
    login(args.admin_email, args.admin_password)
    if not driver.current_url.rstrip("/").endswith("/admin") or not rendered_ok():
        fail("after sign-in the admin is not on a rendered /admin")

    step("every page in the navigation renders")
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav.side a")]
    if len(links) < 5:
        fail(f"the navigation has too few entries: {links}")
    for href in links:
        driver.get(href)
        if not rendered_ok():
            fail(f"{href} did not render")
    print(f"    {len(links)} pages", flush=True)

    step("the admin creates a model with two price tiers (a bad price is caught inline)")
    go("/admin/models")
    form = drawer()
    fill(form, {"name": "browser-model", "up_to_0": "1000", "input_0": "abc", "output_0": "15"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if "field-error" not in body():
        fail("a bad price did not show an inline error")
    form = drawer()
    fill(form, {"name": "browser-model", "up_to_0": "1000", "input_0": "3", "output_0": "15",
                "input_1": "6", "output_1": "30"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-model='browser-model']")
    if "1,000" not in row.text or "6.00" not in row.text:
        fail(f"the model's tiers are not shown: {row.text}")
    shot("admin-models")

    step("the admin creates a provider (a bad priority is caught inline)")
    go("/admin/providers")
    form = drawer()
    fill(form, {"name": "browser-made", "provider_priority": "five"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if "field-error" not in body():
        fail("a bad priority did not show an inline error")
    form = drawer()
    fill(form, {"name": "browser-made", "display_name": "Made in the browser", "provider_priority": "5"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-provider='browser-made']")

    step("on the provider's page: an endpoint, an upstream key and the model")
    submit(row.find_element(By.CSS_SELECTOR, "a"))
    form = drawer("form[data-form='endpoint']")
    fill(form, {"api_format": "CLAUDE", "base_url": args.mock_url, "timeout": "20"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    form = drawer("form[data-form='key']")
    fill(form, {"name": "ui-key", "api_key": UPSTREAM_SECRET, "rate_multiplier": "0.55"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    form = drawer("form[data-form='model']")
    fill(form, {"global_model_id": "browser-model"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    src = body()
    if "ui-key" not in src or "browser-model" not in src and "data-model" not in src:
        fail("the key or the model is missing from the provider page")
    if UPSTREAM_SECRET in src:
        fail("the upstream key is shown in clear")
    shot("admin-provider")

    step("the admin creates a user (a bad quota is caught inline)")
    go("/admin/users")
    form = drawer()
    fill(form, {"email": USER, "password": USER_PW, "quota_usd": "not money"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if "field-error" not in body():
        fail("an invalid quota did not show an inline error")
    form = drawer()
    fill(form, {"email": USER, "password": USER_PW, "quota_usd": "25"})
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if USER not in body():
        fail("the new user is not in the list")
    shot("admin-users")

    step("every detail page renders with real data")
    details = [driver.find_element(By.XPATH, f"//a[contains(., '{USER}')]").get_attribute("href")]
    go("/admin/providers")
    provider = driver.find_element(By.CSS_SELECTOR, "tr[data-provider='browser-made'] a").get_attribute("href")
    details += [provider, provider + "/test", provider + "/upstream-models"]
    go("/admin/models")
    details.append(driver.find_element(By.CSS_SELECTOR, "tr[data-model='browser-model'] a").get_attribute("href"))
    for href in details:
        driver.get(href)
        if not rendered_ok():
            fail(f"{href} did not render")
    print(f"    {len(details)} detail pages", flush=True)
    logout()

    step("the user signs in, cannot open admin pages, and creates a key shown once")
    login(USER, USER_PW)
    if driver.current_url.rstrip("/") != args.url.rstrip("/"):
        fail("a user did not land on their dashboard")
    for path in ["/admin", "/admin/users", "/admin/providers", "/admin/usage"]:
        go(path)
        if "for administrators" not in body():
            fail(f"a normal user could open {path}")
    if any("/admin" in a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav.side a")):
        fail("a normal user sees admin navigation")
    go("/keys")
    driver.find_element(By.NAME, "name").send_keys("browser")
    submit(driver.find_element(By.CSS_SELECTOR, "form.inline button[type=submit]"))
    key = driver.find_element(By.CSS_SELECTOR, "code.secret").text
    if not key.startswith("sk-"):
        fail("no key shown after creation")
    go("/keys")
    if key in body():
        fail("the full key is shown again")
    shot("user-keys")

    step("a request through the gateway with that key is on the user's usage page")
    status, request_id = ask(key)
    if status != 200 or not request_id:
        fail(f"the gateway answered {status}")
    find_request(f"/usage/{request_id}")
    src = body()
    if "Attempt trace" not in src or "$3.00" not in src:
        fail("the request detail lacks its trace or the tier's unit price")
    go("/")
    shot("user-dashboard")
    logout()

    step("the admin finds it too, with the actual cost at the key's multiplier")
    login(args.admin_email, args.admin_password)
    find_request(f"/admin/usage/{request_id}")
    if "0.55" not in body():
        fail("the admin's request detail does not show the multiplier")
    shot("admin-usage-detail")
    go("/admin/usage")
    if request_id not in body():
        fail("the request is not in the usage list")
    shot("admin-usage")
    go("/admin")
    shot("admin-dashboard")

    step("the admin turns the provider off, and routing changes")
    go("/admin/providers")
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-provider='browser-made']")
    submit(row.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-provider='browser-made']")
    if "off" not in row.text:
        fail("the provider still shows as active")
    shot("admin-providers")
    status, _ = ask(key)
    if status != 503:
        fail(f"with its only provider off the model should be unavailable, got {status}")
    print("OK", flush=True)
finally:
    try:
        driver.quit()
    except Exception:  # noqa: BLE001 - the browser may already be gone
        pass
