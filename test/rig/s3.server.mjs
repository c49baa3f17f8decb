// A small S3-compatible object store for the test rig (started with plain
// `node`, no build step), served over HTTPS with a certificate from the rig's
// CA. Usage:
//
//   node s3.server.mjs --listen 10.213.1.9:9443 --cert C --key K --root DIR --bucket B --access-key ID --secret-key-file F [--page-size N]
//
// Objects are plain files: the object KEY of bucket B is the file DIR/B/KEY,
// so a test can see exactly what the store holds (and what expiry removed).
//
// It implements what pgBackRest 2.45's S3 driver sends (src/storage/s3/
// storage.c, read.c, write.c at the release/2.45 tag), path-style only
// (/bucket/key):
//   HEAD   /B/KEY                          object info: Content-Length, Last-Modified, ETag
//   GET    /B/KEY                          object, with "Range: bytes=a-b" / "bytes=a-" (206)
//   PUT    /B/KEY                          object (Content-MD5 checked when sent)
//   DELETE /B/KEY                          object (204, also when missing)
//   GET    /B/?list-type=2&prefix=&delimiter=/&continuation-token=
//                                          ListObjectsV2; CommonPrefixes holds every
//                                          prefix below which any key lies, however deep
//                                          (a prefix holding only deeper keys is listed
//                                          too: without it pgBackRest's expire cannot see
//                                          the WAL directories it must remove). Pages of
//                                          --page-size entries (default 1000).
//   POST   /B/?delete                      multi-object delete (<Delete><Quiet>true...),
//                                          answers an empty <DeleteResult/>
//   POST   /B/KEY?uploads                  create multipart upload -> <UploadId>
//   PUT    /B/KEY?partNumber=N&uploadId=U  upload part -> ETag
//   POST   /B/KEY?uploadId=U               complete (<CompleteMultipartUpload>) -> <ETag>
//   DELETE /B/KEY?uploadId=U               abort
//   GET    /__rig/stats                    request counts by operation (JSON; not S3)
//
// Every request must carry a valid AWS Signature Version 4 (Authorization
// header, x-amz-date, x-amz-content-sha256) made with the configured access
// key and the secret read from --secret-key-file: the canonical request
// (method, path as sent, sorted RFC 3986-encoded query, the signed headers,
// payload hash) is rebuilt and its HMAC-SHA256 signature compared, and a
// hex payload hash is checked against the body. Not checked: the clock skew
// and the region/service of the credential scope (any are accepted). It is a
// test fixture, not a security boundary.
import https from "node:https";
import process from "node:process";
import console from "node:console";
import { Buffer } from "node:buffer";
import { URL } from "node:url";
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, writeFileSync, openSync, readSync, closeSync } from "node:fs";
import { dirname, join, sep } from "node:path";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
for (const required of ["listen", "cert", "key", "root", "bucket", "access-key", "secret-key-file"]) {
  if (!args[required]) {
    console.error(`s3.server.mjs: --${required} is required`);
    process.exit(2);
  }
}
const [listenHost, listenPort] = [args.listen.slice(0, args.listen.lastIndexOf(":")), Number(args.listen.slice(args.listen.lastIndexOf(":") + 1))];
const root = args.root;
const bucketName = args.bucket;
const pageSize = Number(args["page-size"] ?? 1000);
const secretKey = readFileSync(args["secret-key-file"], "utf8").trim();
const uploadsDir = join(root, ".uploads");
mkdirSync(join(root, bucketName), { recursive: true });
mkdirSync(uploadsDir, { recursive: true });

const stats = {};
const count = (op) => (stats[op] = (stats[op] ?? 0) + 1);

const xmlEscape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
const xmlUnescape = (s) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");
const md5 = (buf) => createHash("md5").update(buf).digest();

function send(res, status, body = "", headers = {}) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
  res.writeHead(status, { "Content-Length": String(buf.length), ...(buf.length && !Buffer.isBuffer(body) ? { "Content-Type": "application/xml" } : {}), ...headers });
  res.end(buf);
}

function s3Error(res, status, code, message, resource) {
  send(res, status, `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message><Resource>${xmlEscape(resource)}</Resource></Error>`);
}

/** Every key in the bucket, sorted (byte order; keys are ASCII here). */
function allKeys() {
  const base = join(root, bucketName);
  const out = [];
  const walk = (dir, prefix) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith(".tmp-")) continue;
      if (e.isDirectory()) walk(join(dir, e.name), `${prefix}${e.name}/`);
      else out.push(`${prefix}${e.name}`);
    }
  };
  walk(base, "");
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function objectPath(key) {
  if (!key || key.split("/").some((p) => p === "" || p === "." || p === "..")) return undefined;
  return join(root, bucketName, ...key.split("/"));
}

/** Removes empty directories from the object's up to the bucket. */
function prune(file) {
  const stop = join(root, bucketName);
  for (let d = dirname(file); d.startsWith(stop + sep); d = dirname(d)) {
    try {
      rmdirSync(d);
    } catch {
      return;
    }
  }
}

function writeObject(file, data) {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = join(dirname(file), `.tmp-${randomBytes(6).toString("hex")}`);
  writeFileSync(tmp, data);
  renameSync(tmp, file);
}

function etagOf(file) {
  return `"${md5(readFileSync(file)).toString("hex")}"`;
}

function list(res, q) {
  const prefix = q.get("prefix") ?? "";
  const delimiter = q.get("delimiter") ?? "";
  const token = q.get("continuation-token");
  const after = token ? Buffer.from(token, "base64url").toString() : (q.get("start-after") ?? "");
  const max = Math.min(Number(q.get("max-keys") ?? pageSize), pageSize);
  // Entries in order: keys and common prefixes, each prefix once.
  const entries = [];
  const seen = new Set();
  for (const key of allKeys()) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    const i = delimiter ? rest.indexOf(delimiter) : -1;
    if (i >= 0) {
      const p = prefix + rest.slice(0, i + delimiter.length);
      if (!seen.has(p)) {
        seen.add(p);
        entries.push({ prefix: p, name: p });
      }
    } else entries.push({ key, name: key });
  }
  const pending = entries.filter((e) => e.name > after);
  const page = pending.slice(0, max);
  const truncated = pending.length > page.length;
  const parts = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`,
    `<Name>${xmlEscape(bucketName)}</Name><Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${page.length}</KeyCount><MaxKeys>${max}</MaxKeys>`,
    delimiter ? `<Delimiter>${xmlEscape(delimiter)}</Delimiter>` : "",
    `<IsTruncated>${truncated}</IsTruncated>`,
    truncated ? `<NextContinuationToken>${Buffer.from(page[page.length - 1].name).toString("base64url")}</NextContinuationToken>` : "",
  ];
  for (const e of page) {
    if (e.prefix !== undefined) parts.push(`<CommonPrefixes><Prefix>${xmlEscape(e.prefix)}</Prefix></CommonPrefixes>`);
    else {
      const st = statSync(objectPath(e.key));
      parts.push(`<Contents><Key>${xmlEscape(e.key)}</Key><LastModified>${st.mtime.toISOString()}</LastModified><Size>${st.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`);
    }
  }
  parts.push("</ListBucketResult>");
  send(res, 200, parts.join(""));
}

/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters. */
const awsEncode = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** Checks the request's AWS Signature V4; returns an error message or undefined. */
function sigV4Error(req, body) {
  const auth = req.headers.authorization ?? "";
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return "missing or malformed AWS4-HMAC-SHA256 Authorization header";
  const [, keyId, date, region, service, signedHeaders, signature] = m;
  if (keyId !== args["access-key"]) return "unknown access key";
  const amzDate = req.headers["x-amz-date"];
  if (!amzDate || !amzDate.startsWith(date)) return "x-amz-date missing or not the credential's date";
  const payloadHash = req.headers["x-amz-content-sha256"];
  if (!payloadHash) return "x-amz-content-sha256 missing";
  if (payloadHash !== "UNSIGNED-PAYLOAD" && payloadHash !== createHash("sha256").update(body).digest("hex")) return "x-amz-content-sha256 does not match the body";
  const raw = req.url;
  const q = raw.indexOf("?");
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = (q >= 0 ? raw.slice(q + 1) : "")
    .split("&")
    .filter(Boolean)
    .map((kv) => {
      const i = kv.indexOf("=");
      const k = decodeURIComponent((i >= 0 ? kv.slice(0, i) : kv).replace(/\+/g, "%20"));
      const v = i >= 0 ? decodeURIComponent(kv.slice(i + 1).replace(/\+/g, "%20")) : "";
      return [awsEncode(k), awsEncode(v)];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const headers = signedHeaders.split(";");
  if (!headers.includes("host")) return "host is not a signed header";
  const canonicalHeaders = headers.map((h) => `${h}:${String(req.headers[h] ?? "").trim().replace(/\s+/g, " ")}\n`).join("");
  const canonical = [req.method, path, query, canonicalHeaders, signedHeaders, payloadHash].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, createHash("sha256").update(canonical).digest("hex")].join("\n");
  let k = createHmac("sha256", `AWS4${secretKey}`).update(date).digest();
  for (const part of [region, service, "aws4_request"]) k = createHmac("sha256", k).update(part).digest();
  const expected = createHmac("sha256", k).update(toSign).digest();
  if (!timingSafeEqual(expected, Buffer.from(signature, "hex"))) return "signature does not match";
  return undefined;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

async function handle(req, res) {
  const url = new URL(req.url, "https://s3");
  const q = url.searchParams;
  if (url.pathname === "/__rig/stats") return send(res, 200, JSON.stringify(stats), { "Content-Type": "application/json" });
  const body = await readBody(req);
  const denied = sigV4Error(req, body);
  if (denied) {
    count("denied");
    console.error(`denied ${req.method} ${req.url}: ${denied}`);
    return s3Error(res, 403, "SignatureDoesNotMatch", denied, url.pathname);
  }
  const segments = url.pathname.split("/").slice(1).map(decodeURIComponent);
  const bucket = segments[0];
  const key = segments.slice(1).join("/");
  if (bucket !== bucketName) return s3Error(res, 404, "NoSuchBucket", "no such bucket", url.pathname);
  const m = req.method;

  if (key === "") {
    if (m === "GET" && q.get("list-type") === "2") {
      count("list");
      if (q.has("continuation-token")) count("listContinuation");
      return list(res, q);
    }
    if (m === "POST" && q.has("delete")) {
      count("multiDelete");
      if (req.headers["content-md5"] && md5(body).toString("base64") !== req.headers["content-md5"]) return s3Error(res, 400, "BadDigest", "Content-MD5 mismatch", url.pathname);
      for (const k of body.toString().matchAll(/<Key>([^<]*)<\/Key>/g)) {
        const file = objectPath(xmlUnescape(k[1]));
        if (file && existsSync(file)) {
          rmSync(file);
          prune(file);
          count("deletedObjects");
        }
      }
      return send(res, 200, `<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>`);
    }
    return s3Error(res, 400, "NotImplemented", `${m} on the bucket is not implemented by the rig's store`, url.pathname);
  }

  const file = objectPath(key);
  if (!file) return s3Error(res, 400, "InvalidObjectName", "bad key", url.pathname);

  if (q.has("uploads") && m === "POST") {
    count("multipartCreate");
    const id = randomBytes(12).toString("hex");
    mkdirSync(join(uploadsDir, id));
    writeFileSync(join(uploadsDir, id, "key"), key);
    return send(res, 200, `<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult><Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(key)}</Key><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`);
  }
  if (q.has("uploadId")) {
    const id = q.get("uploadId");
    const dir = join(uploadsDir, id);
    if (!/^[0-9a-f]{24}$/.test(id) || !existsSync(dir) || readFileSync(join(dir, "key"), "utf8") !== key) return s3Error(res, 404, "NoSuchUpload", "no such upload", url.pathname);
    if (m === "PUT" && q.has("partNumber")) {
      count("multipartPart");
      const n = Number(q.get("partNumber"));
      if (!Number.isInteger(n) || n < 1 || n > 10000) return s3Error(res, 400, "InvalidArgument", "bad part number", url.pathname);
      if (req.headers["content-md5"] && md5(body).toString("base64") !== req.headers["content-md5"]) return s3Error(res, 400, "BadDigest", "Content-MD5 mismatch", url.pathname);
      writeFileSync(join(dir, `part-${n}`), body);
      return send(res, 200, "", { ETag: `"${md5(body).toString("hex")}"` });
    }
    if (m === "POST") {
      count("multipartComplete");
      const parts = [...body.toString().matchAll(/<Part>\s*<PartNumber>(\d+)<\/PartNumber>\s*<ETag>([^<]*)<\/ETag>\s*<\/Part>/g)].map((p) => ({ n: Number(p[1]), etag: xmlUnescape(p[2]) }));
      if (parts.length === 0) return s3Error(res, 400, "MalformedXML", "no parts", url.pathname);
      const bufs = [];
      for (const p of parts) {
        const f = join(dir, `part-${p.n}`);
        if (!existsSync(f)) return s3Error(res, 400, "InvalidPart", `part ${p.n} missing`, url.pathname);
        const b = readFileSync(f);
        if (`"${md5(b).toString("hex")}"` !== p.etag) return s3Error(res, 400, "InvalidPart", `part ${p.n} ETag mismatch`, url.pathname);
        bufs.push(b);
      }
      writeObject(file, Buffer.concat(bufs));
      rmSync(dir, { recursive: true, force: true });
      return send(res, 200, `<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult><Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(key)}</Key><ETag>${xmlEscape(etagOf(file))}</ETag></CompleteMultipartUploadResult>`);
    }
    if (m === "DELETE") {
      count("multipartAbort");
      rmSync(dir, { recursive: true, force: true });
      return send(res, 204);
    }
  }

  if (m === "PUT") {
    count("put");
    if (req.headers["content-md5"] && md5(body).toString("base64") !== req.headers["content-md5"]) return s3Error(res, 400, "BadDigest", "Content-MD5 mismatch", url.pathname);
    writeObject(file, body);
    return send(res, 200, "", { ETag: `"${md5(body).toString("hex")}"` });
  }
  if (m === "DELETE") {
    count("delete");
    if (existsSync(file)) {
      rmSync(file);
      prune(file);
    }
    return send(res, 204);
  }
  if (m === "HEAD" || m === "GET") {
    count(m === "HEAD" ? "head" : "get");
    let st;
    try {
      st = statSync(file);
    } catch {
      st = undefined;
    }
    if (!st || !st.isFile()) {
      if (m === "HEAD") {
        res.writeHead(404, { "Content-Length": "0" });
        return res.end();
      }
      return s3Error(res, 404, "NoSuchKey", "no such key", url.pathname);
    }
    const headers = { "Last-Modified": st.mtime.toUTCString(), ETag: etagOf(file), "Accept-Ranges": "bytes" };
    if (m === "HEAD") {
      res.writeHead(200, { ...headers, "Content-Length": String(st.size) });
      return res.end();
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (range) {
      const start = Number(range[1]);
      const end = range[2] === "" ? st.size - 1 : Math.min(Number(range[2]), st.size - 1);
      if (start >= st.size || end < start) return s3Error(res, 416, "InvalidRange", "range not satisfiable", url.pathname);
      const buf = Buffer.alloc(end - start + 1);
      const fd = openSync(file, "r");
      readSync(fd, buf, 0, buf.length, start);
      closeSync(fd);
      return send(res, 206, buf, { ...headers, "Content-Range": `bytes ${start}-${end}/${st.size}` });
    }
    return send(res, 200, readFileSync(file), headers);
  }
  return s3Error(res, 405, "MethodNotAllowed", `${m} is not implemented by the rig's store`, url.pathname);
}

const server = https.createServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) }, (req, res) => {
  handle(req, res).catch((e) => {
    console.error(e);
    if (!res.headersSent) s3Error(res, 500, "InternalError", String(e), req.url);
    else res.destroy();
  });
});
server.keepAliveTimeout = 120_000;
server.listen(listenPort, listenHost, () => console.log(`s3 stand-in listening on ${args.listen}, bucket ${bucketName}, root ${root}`));
