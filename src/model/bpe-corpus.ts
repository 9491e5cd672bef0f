// The text the random decoder checkpoints' byte-level BPE learns its merges
// from. Plain English prose about the things PetServe tests talk about, so
// common words become single tokens and test prompts tokenize into few ids.
// Changing one character changes every merge after it, and so every token id
// of every random decoder checkpoint: treat it as frozen.

export const BPE_TRAINING_CORPUS = `The quick brown fox jumps over the lazy dog. A small model runs on the graphics card, and many tasks share it.
Each task brings its own adapter: a few thousand numbers that change what the model says, while the large weights stay the same for everyone.

Once upon a time there was a little server that answered questions. People sent it short texts, and it read every word carefully before it wrote an answer.
Some questions were about the weather, some were about books and movies, and some were about nothing at all. The server did not mind; it liked to work.
When many people asked at the same time, it put their questions in a queue and answered them in batches, which was faster than one by one.

The history of computing is a story of people who wanted to count faster. First there were tables and slide rules, then machines with gears, then valves, transistors and chips.
Today a phone in your pocket does more arithmetic in one second than all the people of the last century did in their whole lives.
Yet the questions we ask of these machines are the same old ones: what does this sentence mean, what comes next, and is this review positive or negative?

A language model reads a sequence of tokens and predicts the next one. It looks back at everything it has seen through attention, and it keeps what it has computed in a cache,
so the second token costs much less than the first. Generation stops when the model writes the end of text token, or when the answer reaches its maximum length.
Greedy decoding always takes the most likely token; sampling draws one at random, with a temperature that makes the choice sharper or softer.

In the morning the market opens at eight. Farmers bring apples, bread, cheese, eggs, fish, honey and vegetables, and the children run between the stalls.
The baker says his bread is the best in the city, and nobody argues with him, because it is true. By noon the square is full of music and the smell of coffee.
In the evening the streets are quiet again, the lights go on one after another, and the river carries the last boats home under the old stone bridge.

Good writing is clear writing. Say what you mean in as few words as you need, choose the plain word over the fancy one, and read your text aloud before you send it.
If a sentence is hard to read, break it in two. If a paragraph has no point, remove it. Numbers such as 3, 14, 42, 100 and 2024 should be written so that they are easy to compare.

Questions and answers: What time is it? It is half past nine. Where are you going? I am going to the library to return two books. Why? Because they are due today!
Can you help me? Of course, I would be happy to help. Thank you very much, that was very kind of you. You are welcome; see you tomorrow.

Astronomers measure the distance to nearby stars by parallax: as the Earth travels around the Sun, a close star seems to shift against the faraway background.
Galaxies, nebulae and comets fascinated ancient observers in Babylon, Egypt, Greece and China long before telescopes existed. Kepler described elliptical orbits;
Newton explained them with gravitation; Einstein showed that massive bodies bend spacetime itself, which is why light curves around heavy clusters.

Cooking rewards patience. Slice onions thinly, soften them slowly in butter, sprinkle salt, pepper and thyme, then pour wine and stock before simmering gently.
Meanwhile knead dough, let it rise overnight, shape loaves, and bake until golden and crusty. Serve soup with warm bread, grated parmesan, fresh parsley and lemon.
Desserts follow: chocolate mousse, strawberry tart, vanilla custard, cinnamon biscuits, or simply ripe peaches with yogurt and a spoonful of honey.

Football, basketball, tennis, cycling, swimming, rowing and climbing all demand training, discipline and teamwork. Coaches analyse matches, plan exercises,
and encourage athletes during difficult seasons. Spectators cheer loudly, wave flags, sing anthems, and celebrate victories; defeats teach humility and persistence.

Geography shapes economies. Mountains block rainfall, rivers irrigate valleys, deserts stretch across continents, forests shelter wildlife, and oceans regulate climate.
Harbours grew into trading cities; railways connected distant provinces; highways, airports and pipelines followed. Engineers designed tunnels beneath straits,
bridges across canyons, and dams that generate electricity while controlling floods downstream.

Medicine advanced through careful observation: physicians recorded symptoms, compared treatments, and published results. Vaccines prevented smallpox, antibiotics cured
infections, anaesthesia made surgery bearable, and imaging revealed organs without incisions. Nurses, pharmacists, researchers and volunteers keep hospitals functioning.

Software engineering involves requirements, architecture, implementation, testing, deployment and maintenance. Developers write functions, classes, interfaces and modules;
reviewers suggest improvements; continuous integration compiles everything, runs unit tests, benchmarks performance, and reports regressions automatically.
Good engineers document assumptions, handle errors explicitly, validate inputs, measure latency and throughput, and never ignore warnings from compilers or profilers.

Musicians practise scales, arpeggios and etudes for years. Orchestras combine violins, violas, cellos, basses, flutes, oboes, clarinets, bassoons, horns, trumpets,
trombones, tubas, timpani and harps. Composers such as Bach, Mozart, Beethoven, Chopin, Verdi, Debussy and Stravinsky explored harmony, rhythm, melody and texture.

Gardeners prune roses, plant tulips, harvest tomatoes, water seedlings, compost leaves, and protect lettuce from snails. Bees pollinate blossoms; butterflies, beetles,
sparrows, robins and hedgehogs visit hedges. Autumn brings pumpkins, chestnuts, mushrooms and falling leaves; winter brings frost, snowflakes, icicles and silence.

Philosophy asks whether knowledge requires certainty, whether justice differs from fairness, and whether freedom means choosing or understanding. Logicians formalise
arguments with premises, inferences and conclusions; mathematicians prove theorems about primes, triangles, matrices, probability, infinity and symmetry.

Travellers pack suitcases, check passports, board trains, rent bicycles, explore museums, photograph cathedrals, taste local specialities, bargain politely in bazaars,
and write postcards describing volcanoes, glaciers, waterfalls, lagoons, vineyards, castles, lighthouses and villages perched on cliffs above turquoise bays.

Chemistry studies atoms, molecules, reactions and equilibria. Hydrogen, oxygen, nitrogen, carbon, sodium, chlorine, calcium, iron, copper, silver, gold and uranium
behave differently because electrons occupy orbitals with distinct energies. Catalysts accelerate reactions; enzymes perform similar feats inside living cells.

Economists debate inflation, unemployment, taxation, productivity, investment, tariffs, subsidies and regulation. Households budget carefully, entrepreneurs borrow capital,
banks evaluate creditworthiness, and governments balance spending against revenue while central banks adjust interest rates to stabilise prices.

Wildlife documentaries follow elephants migrating across savannas, penguins huddling through blizzards, dolphins hunting sardines, wolves howling beneath moonlight,
owls gliding silently, crocodiles lurking motionless, giraffes browsing acacias, kangaroos bounding, octopuses camouflaging themselves, and whales singing underwater.`;
