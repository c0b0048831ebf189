// Throwaway certificates made with openssl for the TLS listeners of the test and peer Kafka brokers: a
// CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a second CA nobody uses.
import {execFile} from 'node:child_process'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {promisify} from 'node:util'

export interface Certs {
  /** Folder of the PEM files: ca, other-ca (a CA nobody uses), server, client (and their .key). */
  dir: string
  ca: Buffer
  server: {cert: Buffer; key: Buffer}
  client: {cert: Buffer; key: Buffer}
}

/** Makes the certificates in `dir` (created if missing); rejects when openssl is missing or fails. */
export async function makeCertificates(dir: string): Promise<Certs> {
  const openssl = (...args: string[]) => promisify(execFile)('openssl', args, {cwd: dir})
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await mkdir(dir, {recursive: true})
  for (const ca of ['ca', 'other-ca']) {
    await openssl('req', '-x509', ...newKey, '-keyout', `${ca}.key`, '-out', `${ca}.pem`, '-days', '1', '-subj', `/CN=ml-test-${ca}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  }
  const leaves = {server: 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n', client: 'extendedKeyUsage=clientAuth\n'}
  for (const [serial, [name, extensions]] of Object.entries(leaves).entries()) {
    await writeFile(path.join(dir, `${name}.ext`), extensions)
    await openssl('req', '-new', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=ml-test-${name}`)
    await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(serial + 2), '-days', '1', '-out', `${name}.pem`, '-extfile', `${name}.ext`)
  }
  const pem = (name: string) => readFile(path.join(dir, name))
  return {
    dir,
    ca: await pem('ca.pem'),
    server: {cert: await pem('server.pem'), key: await pem('server.key')},
    client: {cert: await pem('client.pem'), key: await pem('client.key')},
  }
}
