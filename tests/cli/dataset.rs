//! `hfsky dataset` run as a user would: check (JSON shape, exit codes, --fix), captions
//! export/import/check, caption templates, report, and bad input, on the bundled sky photos and
//! on flawed photos made here.

use crate::common::*;
use hfsky::dataset::testgen as gen;
use image::imageops;
use std::path::{Path, PathBuf};
use std::process::Output;

fn sky_photos() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sky-photos")
}

fn run(args: &[&str]) -> Output {
    Env::new("http://127.0.0.1:9").run(args)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A flawed set: eight clean photos and one of each problem `check` knows.
fn flawed_set(d: &Path) {
    for seed in 0..8 {
        write(&d.join(format!("clean{seed}.jpg")), &gen::jpeg(&gen::photo(640, 512, seed)));
    }
    write(&d.join("dup.jpg"), &gen::jpeg(&imageops::resize(&gen::photo(640, 512, 3), 700, 560, imageops::FilterType::Lanczos3)));
    write(&d.join("small.png"), &gen::png(&gen::photo(400, 300, 9)));
    write(&d.join("strip.jpg"), &gen::jpeg(&gen::photo(2400, 520, 11)));
    write(&d.join("vivid.jpg"), &gen::jpeg(&gen::oversaturate(&gen::photo(640, 512, 12))));
    let mut text = gen::photo(640, 512, 13);
    gen::draw_text(&mut text, "© SKYPHOTO 2024", 40, 480, 3, [255, 255, 255]);
    write(&d.join("text.jpg"), &gen::jpeg(&text));
    write(&d.join("rotated.jpg"), &gen::with_exif_orientation(&gen::jpeg(&gen::photo(640, 512, 14)), 6));
    write(&d.join("cmyk.jpg"), &gen::cmyk_jpeg(640, 512, [10, 60, 90, 0]));
    write(&d.join("deep.png"), &gen::png16(&gen::photo(640, 512, 15)));
    write(&d.join("clear.png"), &gen::png_alpha(&gen::photo(640, 512, 16), true));
    let jpg = gen::jpeg(&gen::photo(640, 512, 17));
    write(&d.join("cut.jpg"), &jpg[..jpg.len() / 2]);
    write(&d.join("huge.jpg"), &gen::jpeg_claiming_size(&jpg, 40000, 30000));
    write(&d.join("phone.heic"), b"....");
    let wide = imageops::resize(&gen::photo(640, 480, 18), 1280, 512, imageops::FilterType::Triangle);
    write(&d.join("stretched.png"), &gen::png(&wide));
}

fn findings(v: &serde_json::Value, file: &str) -> Vec<(String, String)> {
    let img = v["images"].as_array().unwrap().iter().find(|i| i["file"] == file).unwrap_or_else(|| panic!("{file} not in {v:#}"));
    img["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["severity"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn check_reports_each_flaw_in_the_documented_json_shape() {
    let t = tempfile::tempdir().unwrap();
    flawed_set(t.path());
    let o = run(&["dataset", "check", p(t.path()), "--json"]);
    code(&o, 1);
    let v = json(&o);
    let f = |file| findings(&v, file);
    let kinds = |file| f(file).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(kinds("dup.jpg"), ["duplicate"]);
    assert_eq!(f("small.png"), [("too-small".to_string(), "warning".to_string())]);
    assert!(kinds("strip.jpg").contains(&"aspect".to_string()));
    assert_eq!(kinds("vivid.jpg"), ["filter"]);
    assert_eq!(kinds("text.jpg"), ["text-overlay"]);
    assert_eq!(f("rotated.jpg"), [("exif-orientation".to_string(), "info".to_string())]);
    assert_eq!(kinds("cmyk.jpg")[0], "cmyk");
    assert_eq!(kinds("deep.png"), ["high-bit-depth"]);
    assert_eq!(kinds("clear.png"), ["alpha"]);
    assert_eq!(f("cut.jpg"), [("unreadable".to_string(), "error".to_string())]);
    assert_eq!(f("huge.jpg"), [("too-large".to_string(), "error".to_string())]);
    assert_eq!(f("phone.heic"), [("unsupported".to_string(), "error".to_string())]);
    assert!(kinds("stretched.png").contains(&"stretched".to_string()), "{:?}", kinds("stretched.png"));
    for seed in 0..8 {
        let name = format!("clean{seed}.jpg");
        assert_eq!(findings(&v, &name), [], "{name}");
    }
    // Every finding has a message, and the documented keys only.
    for img in v["images"].as_array().unwrap() {
        for fd in img["findings"].as_array().unwrap() {
            assert!(!fd["message"].as_str().unwrap().is_empty());
            assert_eq!(fd.as_object().unwrap().len(), 3, "{fd}");
        }
    }
    let dup = v["images"].as_array().unwrap().iter().find(|i| i["file"] == "dup.jpg").unwrap();
    assert!(dup["findings"][0]["message"].as_str().unwrap().contains("clean3.jpg"), "the pair is named");
}

#[test]
fn fail_on_sets_the_exit_code_and_human_output_lists_findings() {
    let t = tempfile::tempdir().unwrap();
    for seed in 0..3 {
        write(&t.path().join(format!("{seed}.jpg")), &gen::jpeg(&gen::photo(640, 512, seed)));
    }
    write(&t.path().join("r.jpg"), &gen::with_exif_orientation(&gen::jpeg(&gen::photo(640, 512, 7)), 3));
    let out = ok(&run(&["dataset", "check", p(t.path())]));
    assert!(out.contains("r.jpg: info exif-orientation: EXIF orientation 3"), "{out}");
    assert!(out.contains("4 files: 0 errors, 0 warnings, 1 info"), "{out}");
    ok(&run(&["dataset", "check", p(t.path()), "--fail-on", "warning"]));
    let o = run(&["dataset", "check", p(t.path()), "--fail-on", "info", "--json"]);
    code(&o, 1);
    json(&o); // one JSON document, no error object after it
    assert!(text(&o).contains("1 finding(s) at or above info"));
    code(&run(&["dataset", "check", p(t.path()), "--fail-on", "severe"]), 2);
}

#[test]
fn the_bundled_sky_photos_pass_the_check() {
    let o = run(&["dataset", "check", p(&sky_photos()), "--json"]);
    ok(&o);
    let v = json(&o);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 11);
    assert!(images.iter().all(|i| i["findings"].as_array().unwrap().is_empty()), "{v:#}");
}

#[test]
fn fix_writes_a_clean_copy_and_never_touches_originals() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("photos");
    flawed_set(&d);
    write(&d.join("clean1.txt"), b"a photo of SKY, clouds");
    let before = files_under(&d);
    let out = t.path().join("clean");
    let o = run(&["dataset", "check", p(&d), "--fix", p(&out), "--json", "--resolution", "512"]);
    ok(&o);
    let v = json(&o);
    let dropped: Vec<&str> = v["fix"]["dropped"].as_array().unwrap().iter().map(|x| x["file"].as_str().unwrap()).collect();
    for f in ["cut.jpg", "huge.jpg", "phone.heic", "dup.jpg"] {
        assert!(dropped.contains(&f), "{f} dropped: {dropped:?}");
    }
    assert!(!dropped.contains(&"clean1.jpg"));
    assert_eq!(files_under(&d), before, "originals untouched");
    let a = image::open(out.join("clean1.jpg")).unwrap();
    assert_eq!(a.height(), 512, "shorter side brought to the resolution");
    let r = image::open(out.join("rotated.jpg")).unwrap();
    assert!(r.height() > r.width(), "EXIF rotation applied to the pixels");
    assert_eq!(image::open(out.join("deep.png")).unwrap().color(), image::ColorType::Rgb8);
    assert_eq!(std::fs::read_to_string(out.join("clean1.txt")).unwrap(), "a photo of SKY, clouds");
    let list = std::fs::read_to_string(out.join("dropped.tsv")).unwrap();
    assert!(list.contains("cut.jpg\tunreadable: "), "{list}");
    // The copy itself checks clean of errors.
    ok(&run(&["dataset", "check", p(&out)]));
    // A second run refuses the non-empty folder, and a folder inside the dataset.
    code(&run(&["dataset", "check", p(&d), "--fix", p(&out)]), 2);
    code(&run(&["dataset", "check", p(&d), "--fix", p(&d.join("clean"))]), 2);
}

#[test]
fn captions_export_edit_import_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for n in ["a.jpg", "b.jpg", "sub/c.png"] {
        write(&d.join(n), &gen::jpeg(&gen::photo(64, 48, 1)));
    }
    write(&d.join("a.txt"), b"orange sunset");
    let o = run(&["dataset", "captions", "export", p(d)]);
    ok(&o);
    // The TSV alone on stdout; where the captions came from on stderr.
    let tsv = String::from_utf8(o.stdout).unwrap();
    assert_eq!(tsv, "file_name\ttext\na.jpg\torange sunset\nb.jpg\t\nsub/c.png\t\n");
    let note = String::from_utf8(o.stderr).unwrap();
    assert!(note.contains("captions from sidecar .txt files: 2 of 3 photo(s) fall back to the instance prompt"), "{note}");
    let edited = tsv.replace("b.jpg\t", "b.jpg\tpurple storm\\nover the sea").replace("sub/c.png\t", "sub/c.png\tgrey dusk");
    let file = t.path().join("captions.tsv");
    std::fs::write(&file, &edited).unwrap();
    ok(&run(&["dataset", "captions", "import", p(d), p(&file)]));
    assert_eq!(std::fs::read_to_string(d.join("b.txt")).unwrap(), "purple storm\nover the sea");
    assert_eq!(std::fs::read_to_string(d.join("sub/c.txt")).unwrap(), "grey dusk");
    ok(&run(&["dataset", "captions", "check", p(d)]));

    // The same edit into metadata.jsonl, then read back through --source metadata.
    ok(&run(&["dataset", "captions", "import", p(d), p(&file), "--to", "metadata"]));
    let meta = std::fs::read_to_string(d.join("metadata.jsonl")).unwrap();
    assert!(meta.contains("\"file_name\":\"sub/c.png\""), "{meta}");
    let o = run(&["dataset", "captions", "export", p(d), "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(v["source"], "metadata");
    assert_eq!(v["captions"][1]["caption"], "purple storm\nover the sea");

    // Bad TSV: the line is named, nothing is written.
    std::fs::write(&file, "file_name\ttext\nzz.jpg\tx\n").unwrap();
    let out = code(&run(&["dataset", "captions", "import", p(d), p(&file)]), 2);
    assert!(out.contains("captions.tsv line 2") && out.contains("zz.jpg"), "{out}");
    assert_eq!(std::fs::read_to_string(d.join("metadata.jsonl")).unwrap(), meta);
}

#[test]
fn captions_check_names_missing_empty_and_duplicates() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for n in ["a.jpg", "b.jpg", "c.jpg", "d.jpg"] {
        write(&d.join(n), &gen::jpeg(&gen::photo(64, 48, 1)));
    }
    write(&d.join("a.txt"), b"sky");
    write(&d.join("b.txt"), b"  \n");
    write(&d.join("d.txt"), b"sky");
    let o = run(&["dataset", "captions", "check", p(d), "--json"]);
    code(&o, 1);
    let v = json(&o);
    let issues: Vec<(&str, &str)> =
        v["issues"].as_array().unwrap().iter().map(|i| (i["file"].as_str().unwrap(), i["kind"].as_str().unwrap())).collect();
    assert_eq!(issues, [("b.jpg", "empty"), ("c.jpg", "missing"), ("d.jpg", "duplicate")]);
}

#[test]
fn caption_template_fills_and_rewrites() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for n in ["a.jpg", "b.jpg"] {
        write(&d.join(n), &gen::jpeg(&gen::photo(64, 48, 1)));
    }
    write(&d.join("a.txt"), b"orange clouds");
    // Only images without a caption are filled; {caption} needs one, so b.jpg is reported.
    let out = ok(&run(&["dataset", "caption", p(d), "--template", "a photo of SKY, {caption}"]));
    assert!(out.contains("b.jpg"), "{out}");
    assert!(!d.join("b.txt").exists());
    ok(&run(&["dataset", "caption", p(d), "--template", "a photo of SKY, {file}"]));
    assert_eq!(std::fs::read_to_string(d.join("b.txt")).unwrap(), "a photo of SKY, b");
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "orange clouds", "kept without --overwrite");
    let o = run(&["dataset", "caption", p(d), "--template", "SKY, {caption}", "--overwrite", "--dry-run", "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(v["captions"][0]["caption"], "SKY, orange clouds");
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "orange clouds", "dry run writes nothing");
    ok(&run(&["dataset", "caption", p(d), "--template", "SKY, {caption}", "--overwrite"]));
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "SKY, orange clouds");
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// BLIP captions through the offline Hub (the HF cache) and from a local folder: the photo the
/// fixture was made with gets transformers' caption, existing captions are kept unless
/// --overwrite, metadata.jsonl keeps its other columns, an unreadable photo is listed.
#[test]
fn caption_model_blip_writes_generated_captions() {
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join("tiny-blip-reference.json")).unwrap()).unwrap();
    let caption = expected["caption"].as_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    ok(&env.cmd(&["push", p(&fixtures().join("tiny-blip")), "--repo", "alice/tiny-blip"]).env("HF_TOKEN", ALICE).output().unwrap());

    let d = env.dir.path().join("photos");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(fixtures().join("tiny-blip-photo.png"), d.join("sunset.png")).unwrap();
    std::fs::copy(fixtures().join("tiny-blip-photo.png"), d.join("kept.png")).unwrap();
    write(&d.join("kept.txt"), b"my own words");
    write(&d.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg");
    let o = env.run(&["--json", "dataset", "caption", p(&d), "--model", "alice/tiny-blip", "--template", "a photo of SKY, {caption}"]);
    let v = json(&o);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(d.join("sunset.txt")).unwrap(), format!("a photo of SKY, {caption}"));
    assert_eq!(std::fs::read_to_string(d.join("kept.txt")).unwrap(), "my own words", "kept without --overwrite");
    assert!(!d.join("broken.txt").exists());
    assert_eq!(v["written"], 1);
    assert_eq!(v["kept_existing"], 1);
    assert_eq!(v["unreadable"][0]["file"], "broken.jpg");
    assert!(v["model"].as_str().unwrap().contains("models--alice--tiny-blip"), "went through the HF cache: {v}");
    assert!(env.hf_home().join("hub/models--alice--tiny-blip/snapshots").is_dir());

    // A local folder, --overwrite, metadata.jsonl with an extra column.
    std::fs::remove_file(d.join("broken.jpg")).unwrap();
    write(&d.join("metadata.jsonl"), b"{\"file_name\": \"kept.png\", \"text\": \"old\", \"source\": \"phone\"}\n");
    let model = fixtures().join("tiny-blip");
    ok(&env.run(&["dataset", "caption", p(&d), "--model", p(&model), "--overwrite"]));
    let meta = std::fs::read_to_string(d.join("metadata.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = meta.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kept = rows.iter().find(|r| r["file_name"] == "kept.png").unwrap();
    assert_eq!(kept["text"], caption);
    assert_eq!(kept["source"], "phone");
    assert!(rows.iter().any(|r| r["file_name"] == "sunset.png" && r["text"] == caption), "{meta}");

    // Bad input: a template without {caption}, a folder that is not a BLIP model.
    let e = code(&env.run(&["dataset", "caption", p(&d), "--model", p(&model), "--template", "a photo of SKY"]), 2);
    assert!(e.contains("{caption}"), "{e}");
    let e = code(&env.run(&["dataset", "caption", p(&d), "--model", p(&d), "--overwrite"]), 2);
    assert!(e.contains("config.json"), "{e}");
    let e = code(&env.run(&["dataset", "caption", p(&d)]), 2);
    assert!(e.contains("--model blip"), "{e}");
}

#[test]
fn report_writes_escaped_html_and_json() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("set");
    for i in 0..6 {
        let colour = if i < 3 { [245, 140, 40] } else { [110, 50, 150] };
        let g = gen::photo(160, 120, i);
        let img = image::RgbImage::from_fn(160, 120, |x, y| {
            let n = g.get_pixel(x, y).0[0] as i32 / 32 - 4;
            if y < 90 {
                image::Rgb(colour.map(|c: u8| (c as i32 + n).clamp(0, 255) as u8))
            } else {
                image::Rgb([25, 22, 20])
            }
        });
        write(&d.join(format!("<b>{i}</b>.png")), &gen::png(&img));
        write(&d.join(format!("<b>{i}</b>.txt")), b"SKY <script>alert(1)</script>");
    }
    let out = t.path().join("report");
    let o = run(&["dataset", "report", p(&d), "--out", p(&out), "--json"]);
    let v = json(&o);
    ok(&o);
    assert!(v["blends"].as_array().unwrap().iter().any(|b| b["into"] == "pink"), "{v:#}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap(), v);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("&lt;b&gt;0&lt;&#x2f;b&gt;.png"), "file names escaped");
    assert!(!html.contains("<b>0</b>") && !html.contains("<script>alert"), "no raw user text");
    assert!(html.contains("seen from below"));
}

#[test]
fn report_on_the_bundled_sky_photos() {
    let t = tempfile::tempdir().unwrap();
    let out = ok(&run(&["dataset", "report", p(&sky_photos()), "--out", p(t.path())]));
    assert!(out.contains("11 images") && out.contains("colour clusters:"), "{out}");
    assert!(out.contains("buckets at 512 px: 640×384 (9)"), "{out}");
    assert!(t.path().join("report.html").is_file());
    // In a browser every thumbnail (11 under the buckets, more under the colour clusters) loads.
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        assert!(std::env::var_os("HFSKY_TEST_BROWSER").is_none(), "HFSKY_TEST_BROWSER is set but no chromium is installed");
        return;
    };
    let probe = "<script>addEventListener('load',()=>{const b=[...document.images].filter(i=>!(i.complete&&i.naturalWidth>0)).length;\
        document.documentElement.setAttribute('data-check',document.images.length+'/'+b);});</script></body>";
    let page = t.path().join("check.html");
    std::fs::write(&page, std::fs::read_to_string(t.path().join("report.html")).unwrap().replace("</body>", probe)).unwrap();
    let o = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let check = dom.split("data-check=\"").nth(1).and_then(|r| r.split('"').next()).expect("the page's load check ran");
    let (shown, broken) = check.split_once('/').unwrap();
    assert!(shown.parse::<usize>().unwrap() > 11 && broken == "0", "images shown/broken: {check}");
}

#[test]
fn bad_folders_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let out = code(&run(&["dataset", "check", p(&t.path().join("nope"))]), 2);
    assert!(out.contains("does not exist"), "{out}");
    let out = code(&run(&["dataset", "report", p(t.path())]), 2);
    assert!(out.contains("no images in"), "{out}");
    write(&t.path().join("a.jpg"), &gen::jpeg(&gen::photo(64, 48, 1)));
    let out = code(&run(&["dataset", "captions", "export", p(&t.path().join("a.jpg"))]), 2);
    assert!(out.contains("is not a folder"), "{out}");
    write(&t.path().join("metadata.jsonl"), b"{\"file_name\": \"a.jpg\", \"text\": \"x\"}\n{oops\n");
    let out = code(&run(&["dataset", "captions", "export", p(t.path())]), 2);
    assert!(out.contains("metadata.jsonl line 2") && out.contains("malformed JSON"), "{out}");
    #[cfg(unix)]
    {
        let l = t.path().join("loop");
        std::fs::create_dir(&l).unwrap();
        std::os::unix::fs::symlink(&l, l.join("again")).unwrap();
        std::fs::remove_file(t.path().join("metadata.jsonl")).unwrap();
        let v = json(&run(&["dataset", "check", p(t.path()), "--json"]));
        assert!(findings(&v, "loop/again").iter().any(|(k, _)| k == "unreadable"), "{v:#}");
    }
}
